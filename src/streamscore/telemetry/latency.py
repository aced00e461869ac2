"""Request latency: a running mean over all requests and quantiles over the most recent ones.

>>> window = LatencyWindow(capacity=4)
>>> for seconds in [0.1, 0.2, 0.3, 0.4, 0.5]:
...     window.record(seconds)
>>> window.count, round(window.mean, 3), round(window.quantile(0.5), 3)
(5, 0.3, 0.35)
"""

from __future__ import annotations

import numpy as np


class LatencyWindow:
    def __init__(self, capacity: int = 10_000) -> None:
        self._recent = np.zeros(capacity, dtype=np.float64)
        self._next = 0
        self.count = 0
        self.total = 0.0

    def record(self, seconds: float) -> None:
        self._recent[self._next % len(self._recent)] = seconds
        self._next += 1
        self.count += 1
        self.total += seconds

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """Quantile of the last `capacity` requests (0 before the first)."""
        filled = min(self._next, len(self._recent))
        return float(np.quantile(self._recent[:filled], q)) if filled else 0.0
