"""The current distribution: per-bin counts over the last `window` events, for K values at once.

A ring buffer keeps each event's bin index per value, so the event leaving the window is taken
out of the counts as the new one comes in: a batch of N events costs O(N·K), whatever the
window's length (one compiled loop, a few ns per event and value). One slot per value, the last, means "no value" (a value
still collecting its reference): it is counted like the others and never read.

>>> window = SlidingCounts(window=3, columns=2, slots=3)
>>> window.update(np.array([[0, 1], [1, 1]]), np.array([10.0, 11.0]))
>>> window.update(np.array([[1, 0], [0, 2]]), np.array([12.0, 13.0]))
>>> window.counts[:, :2].tolist()  # the last three events: [1, 1], [1, 0], [0, 2]
[[1, 2], [1, 1]]
>>> window.time_range(3)
(11.0, 13.0)
"""

from __future__ import annotations

import numpy as np
from numba import njit


class SlidingCounts:
    def __init__(self, window: int, columns: int, slots: int) -> None:
        if window < 1 or slots < 2 or slots > np.iinfo(np.int16).max:
            raise ValueError("window must be positive and slots in [2, 32767]")
        self.window = window
        self.slots = slots
        self._ring = np.full((window, columns), slots - 1, dtype=np.int16)
        self._times = np.full(window, np.nan)
        self._next = 0  # ring position the next event goes to
        self.counts = np.zeros((columns, slots), dtype=np.int64)
        self.counts[:, -1] = window

    def update(self, index: np.ndarray, timestamps: np.ndarray) -> None:
        """Add N events: `index` int [N, K] bin indices in [0, slots), `timestamps` [N]."""
        if len(index) > self.window:  # only the last `window` can stay
            index, timestamps = index[-self.window :], timestamps[-self.window :]
        _slide(np.asarray(index, dtype=np.int16), self._ring, self.counts, self._next)
        positions = (self._next + np.arange(len(index))) % self.window
        self._times[positions] = timestamps
        self._next = (self._next + len(index)) % self.window

    def time_range(self, events: int) -> tuple[float, float]:
        """Earliest and latest timestamps among the last `events` events (1 ≤ events ≤ window)."""
        times = np.roll(self._times, -self._next)[-events:]
        return float(times.min()), float(times.max())

    def clear_column(self, column: int) -> None:
        """Forget one value's events (its bins changed): they become "no value"."""
        self._ring[:, column] = self.slots - 1
        self.counts[column] = 0
        self.counts[column, -1] = self.window

    def add_column(self) -> None:
        self._ring = np.concatenate(
            [self._ring, np.full((self.window, 1), self.slots - 1, dtype=np.int16)], axis=1
        )
        self.counts = np.concatenate([self.counts, np.zeros((1, self.slots), np.int64)])
        self.counts[-1, -1] = self.window

    def remove_column(self, column: int) -> None:
        self._ring = np.delete(self._ring, column, axis=1)
        self.counts = np.delete(self.counts, column, axis=0)


@njit(cache=True, nogil=True)
def _slide(index, ring, counts, start):  # type: ignore[no-untyped-def]
    """Write `index` into the ring from `start`, moving each overwritten entry out of `counts`."""
    window, columns = ring.shape
    for i in range(len(index)):
        row = (start + i) % window
        for c in range(columns):
            counts[c, ring[row, c]] -= 1
            counts[c, index[i, c]] += 1
            ring[row, c] = index[i, c]
