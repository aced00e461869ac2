"""Event-time windows: stream time, the window's lower edge, and which arrivals are late.

Stream time `T` is the largest event timestamp accepted so far (Kafka Streams' definition), so
the window `[T - W, T]` moves with the data, not with the server's clock: replaying a store gives
the same windows. An event older than `T - W` when it arrives is late.

>>> clock = StreamClock(window=300)
>>> clock.advance(np.array([1000.0, 1400.0, 1050.0, 1200.0])).tolist()
[False, False, True, False]
>>> clock.time, clock.cutoff
(1400.0, 1100.0)
"""

from __future__ import annotations

import numpy as np


class StreamClock:
    def __init__(self, window: float, time: float = -np.inf) -> None:
        self.window = float(window)
        self.time = float(time)

    @property
    def cutoff(self) -> float:
        """Oldest timestamp still inside the window."""
        return self.time - self.window

    def advance(self, timestamps: np.ndarray) -> np.ndarray:
        """Late mask for events arriving in this order; moves stream time past them."""
        if len(timestamps) == 0:
            return np.zeros(0, dtype=bool)
        before = np.maximum.accumulate(np.concatenate(([self.time], timestamps[:-1])))
        self.time = max(self.time, float(timestamps.max()))
        return timestamps < before - self.window
