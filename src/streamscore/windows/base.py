"""The protocol every windowed per-user statistic follows, River-style: the commit step calls
`update` once per group commit with the committed events, their scores and the stream clock
(already advanced past them); how readers query it is the statistic's own. Time belongs to the clock
(`windows.event_time`): a statistic only keeps what lies inside `[clock.cutoff, clock.time]`.
A new statistic is one module that implements this and is handed to the pipeline.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from streamscore.events import EventBatch
from streamscore.windows.event_time import StreamClock


class WindowedStatistic(Protocol):
    def update(self, events: EventBatch, scores: np.ndarray, clock: StreamClock) -> None:
        """Take in committed events; drop what left the window. Runs on the commit thread."""
