"""One sample of the service's vital signs per second, kept for the last ten minutes: what the
dashboard's charts draw (a page opened late still sees the recent past).

Each sample is computed from totals the service keeps anyway (rates are differences of
counters between samples), so sampling costs nothing per event.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import numpy as np

KEEP = 600  # samples (seconds)
MEDIAN_BINS = 24


class Timeline:
    def __init__(self, read: Callable[[], dict[str, float | None]], interval: float = 1.0) -> None:
        """`read()` returns the current totals and gauges; `events` must be a running total."""
        self.read = read
        self.interval = interval
        self.samples: deque[dict[str, float | None]] = deque(maxlen=KEEP)
        self._last: tuple[float, float] | None = None  # (monotonic, events)
        self._changed = asyncio.Event()

    def sample(self) -> dict[str, float | None]:
        now = time.monotonic()
        values = self.read()
        events = float(values["events"] or 0)
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = max(0.0, (events - self._last[1]) / (now - self._last[0]))
        self._last = (now, events)
        sample = {"t": time.time(), "events_per_second": rate, **values}
        self.samples.append(sample)
        return sample

    async def run(self) -> None:
        """Sample every `interval` seconds until cancelled; wakes `wait_next` callers."""
        while True:
            self.sample()
            self._changed.set()
            self._changed = asyncio.Event()
            await asyncio.sleep(self.interval)

    async def wait_next(self) -> dict[str, float | None]:
        await self._changed.wait()
        return self.samples[-1]


def median_histogram(medians: np.ndarray) -> dict[str, list[float]]:
    """Counts of per-user medians in equal bins between their min and max (the dashboard's
    distribution chart); empty lists when no user has a median yet."""
    if not len(medians):
        return {"edges": [], "counts": []}
    low, high = float(medians.min()), float(medians.max())
    if high <= low:
        high = low + 1e-9
    counts, edges = np.histogram(medians, bins=MEDIAN_BINS, range=(low, high))
    return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}
