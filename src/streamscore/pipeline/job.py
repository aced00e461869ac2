"""A job: one request's new events on their way through the pipeline (admitted, scored,
committed, acknowledged). The scoring stage fills in `scores`; the commit step resolves it.

>>> import numpy as np
>>> events = EventBatch(["u"], np.array([1e9]), np.ones((1, 3)), [None], np.array([0]))
>>> job = Job(events, duplicates=0, arrived=0.0)
>>> job.size, job.features.dtype.name, job.priority
(1, 'float32', 1)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from streamscore.events import EventBatch, IngestResult


@dataclass(slots=True, eq=False)
class Job:
    events: EventBatch  # the request's events not seen before (duplicates removed)
    duplicates: int  # events of the request recognised as already committed
    arrived: float  # time.monotonic() at submission
    future: asyncio.Future[IngestResult] | None = None  # None for jobs nobody awaits (benchmarks)
    features: np.ndarray = field(init=False)  # float32 [n, F]: what the model reads
    scores: np.ndarray = field(init=False)  # float32 [n], filled in by the scoring stage
    model_ids: np.ndarray = field(init=False)  # int32 [n]: the store's id of each row's model
    variants: list[str | None] | None = None  # each row's experiment variant, while one runs
    taken: int = 0  # events handed to forward calls so far
    done: int = 0  # events scored so far

    def __post_init__(self) -> None:
        self.features = self.events.features.astype(np.float32)
        self.scores = np.empty(len(self.events), dtype=np.float32)
        self.model_ids = np.full(len(self.events), -1, dtype=np.int32)  # -1: the batch's model

    @property
    def size(self) -> int:
        return len(self.events)

    @property
    def priority(self) -> int:
        return self.events.priority

    def resolve(self, outcome: IngestResult | BaseException) -> None:
        """Settle the awaiting request from any thread (once; later calls are ignored)."""
        future = self.future
        if future is None:
            return

        def settle() -> None:
            if future.done():
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        future.get_loop().call_soon_threadsafe(settle)
