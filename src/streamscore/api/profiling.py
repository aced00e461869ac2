"""Profiling with pyinstrument: the event-loop thread, whole runs or on demand.

`serve --profile PATH` profiles from start to shutdown; `POST /admin/profile?seconds=N`
profiles the running service for N seconds and answers the HTML report. One profile at a time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pyinstrument import Profiler

_active: Profiler | None = None


class ProfilerBusy(RuntimeError):
    """Another profile is being taken."""


def start() -> Profiler:
    global _active
    if _active is not None:
        raise ProfilerBusy("a profile is already being taken")
    _active = Profiler(interval=0.001, async_mode="disabled")
    _active.start()
    return _active


def stop(profiler: Profiler) -> str:
    global _active
    profiler.stop()
    _active = None
    return profiler.output_html()


def write_on_exit(profiler: Profiler, path: Path) -> None:
    path.write_text(stop(profiler))


async def profile_for(seconds: float) -> str:
    """HTML report of what the event loop did over the next `seconds`."""
    profiler = start()
    try:
        await asyncio.sleep(seconds)
    finally:
        html = stop(profiler)
    return html
