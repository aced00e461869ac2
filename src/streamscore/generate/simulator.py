"""The built-in simulator: synthetic events generated inside the service and sent through the
same ingest path as external traffic (decode, validation, admission, scoring, commit), so
what the dashboard shows while it runs is the real service at work.

It sends `rps * duration_s` events (rounded up to whole requests) in about 20 requests a second
(`rps / 20` events each, 1..2000), each awaited before the next, catching up when it falls
behind its schedule; when the service refuses (overload,
store failure) it backs off for the `Retry-After` second and counts the refusal. One run at a
time; rate and duration are capped by the service's configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

import msgspec
import numpy as np

from streamscore.events import SIMULATED_PREFIX
from streamscore.generate.workload import Workload

log = logging.getLogger(__name__)

REQUESTS_PER_SECOND = 20
TEMPLATES = 64  # distinct request bodies, so each user's events vary


class Outcome(Protocol):
    processed: int
    rejected: int
    late: int


Ingest = Callable[[bytes], Awaitable[Outcome]]


class SimulatorBusy(RuntimeError):
    """A run is in progress: stop it first."""


class Drift(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """From `after_s` seconds into the run, the chosen inputs become `value * scale + shift`
    (inputs are uniform on [0, 1) otherwise, standard deviation 0.29)."""

    features: list[Annotated[int, msgspec.Meta(ge=0)]]
    after_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    shift: float = 0.0
    scale: float = 1.0


class Run(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One simulator run, as `POST /simulator/start` takes it."""

    rps: Annotated[float, msgspec.Meta(gt=0)]
    duration_s: Annotated[float, msgspec.Meta(gt=0)]
    users: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 1000
    late_fraction: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    drift: Drift | None = None


class Simulator:
    def __init__(
        self, ingest: Ingest, n_features: int, window: float, max_rps: float, max_duration: float
    ) -> None:
        self.ingest = ingest
        self.n_features = n_features
        self.window = window
        self.max_rps = max_rps
        self.max_duration = max_duration
        self.run: Run | None = None
        self._task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.sent = self.processed = self.rejected = self.late = 0
        self.refused_requests = 0
        self.last_error: str | None = None
        self.stopped_by: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, run: Run) -> None:
        """Start a run; ValueError if it exceeds the caps, SimulatorBusy if one is going."""
        if self.running:
            raise SimulatorBusy("the simulator is running; POST /simulator/stop first")
        if run.rps > self.max_rps:
            raise ValueError(f"rps {run.rps:g} exceeds the cap of {self.max_rps:g}")
        if run.duration_s > self.max_duration:
            raise ValueError(
                f"duration_s {run.duration_s:g} exceeds the cap of {self.max_duration:g}"
            )
        if run.drift is not None and any(i >= self.n_features for i in run.drift.features):
            raise ValueError(f"drift.features must be below the model's {self.n_features} inputs")
        self._reset()
        self.run = run
        self.started_at = time.time()
        self._task = asyncio.get_running_loop().create_task(self._loop(run))

    async def stop(self) -> None:
        if self.running:
            self.stopped_by = "request"
            self._task.cancel()  # type: ignore[union-attr]
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # type: ignore[misc]

    def _workload(self, run: Run, batch: int, drift: Drift | None) -> Workload:
        """Encoding the templates takes a moment: called in a thread. Users are in the `sim:`
        namespace, which real events may not use."""
        shift = scale = None
        if drift is not None:
            shift, scale = np.zeros(self.n_features), np.ones(self.n_features)
            shift[drift.features] = drift.shift
            scale[drift.features] = drift.scale
        return Workload(
            users=run.users,
            batch_size=batch,
            late_fraction=run.late_fraction,
            window=self.window,
            seed=int(time.time()),
            templates=TEMPLATES,
            features=self.n_features,
            user_prefix=SIMULATED_PREFIX + "user-",
            shift=shift,
            scale=scale,
        )

    async def _loop(self, run: Run) -> None:
        batch = max(1, min(2000, round(run.rps / REQUESTS_PER_SECOND)))
        workload = await asyncio.to_thread(self._workload, run, batch, None)
        drifted = (
            None
            if run.drift is None
            else await asyncio.to_thread(self._workload, run, batch, run.drift)
        )
        total = batch * math.ceil(run.rps * run.duration_s / batch)
        begin = time.monotonic()
        try:
            # Request k leaves at k * batch / rps; a run that falls behind (refusals) still
            # ends one second after its duration.
            while self.sent < total and (elapsed := time.monotonic() - begin) < run.duration_s + 1:
                ahead = self.sent - run.rps * elapsed
                if ahead > 0:
                    await asyncio.sleep(ahead / run.rps)
                    continue
                try:
                    source = workload
                    if drifted is not None and elapsed >= run.drift.after_s:  # type: ignore[union-attr]
                        source = drifted
                    outcome = await self.ingest(source.body(time.time()))
                except Exception as exc:  # refused (overload, store) or failed: back off
                    self.refused_requests += 1
                    self.last_error = str(exc)
                    await asyncio.sleep(1.0)
                    continue
                self.sent += batch
                self.processed += outcome.processed
                self.rejected += outcome.rejected
                self.late += outcome.late
            self.stopped_by = "duration"
        finally:
            self.finished_at = time.time()
            log.info("simulator stopped", extra={"events": self.processed, "by": self.stopped_by})

    def status(self) -> dict[str, object]:
        run = self.run
        end = self.finished_at if self.finished_at is not None else time.time()
        elapsed = end - self.started_at if self.started_at is not None else 0.0
        return {
            "running": self.running,
            "rps": run.rps if run else None,
            "duration_s": run.duration_s if run else None,
            "users": run.users if run else None,
            "late_fraction": run.late_fraction if run else None,
            "started_at": self.started_at,
            "elapsed_s": elapsed,
            "sent_events": self.sent,
            "processed_events": self.processed,
            "rejected_events": self.rejected,
            "late_events": self.late,
            "refused_requests": self.refused_requests,
            "achieved_rps": self.sent / elapsed if elapsed > 0 else 0.0,
            "stopped_by": self.stopped_by,
            "last_error": self.last_error,
            "max_rps": self.max_rps,
            "max_duration_s": self.max_duration,
        }
