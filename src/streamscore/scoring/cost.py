"""What a batch costs: a fixed part per forward call, a part per event, and compute time.

Prices are in any currency unit the operator likes (the defaults are US dollars for a small
cloud VM core); only their ratios steer the controller.

>>> model = CostModel(per_batch=1e-6, per_event=1e-9, per_second=2e-5)
>>> round(model.cost(size=100, seconds=0.001) * 1e9)  # 1000 + 100 + 20 nano-units
1120
>>> round(model.per_event_cost(size=100, seconds=0.001) * 1e10)
112
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CostModel:
    per_batch: float = 1e-7  # dispatching one forward call (queue hand-offs, bookkeeping)
    per_event: float = 1e-10  # moving one event through the stage
    per_second: float = 1.4e-5  # one core-second (about $0.05 per core-hour)

    def cost(self, size: float | np.ndarray, seconds: float | np.ndarray) -> float | np.ndarray:
        return self.per_batch + self.per_event * size + self.per_second * seconds

    def per_event_cost(
        self, size: float | np.ndarray, seconds: float | np.ndarray
    ) -> float | np.ndarray:
        return self.cost(size, seconds) / np.maximum(size, 1)
