"""The columnar batch that flows through the pipeline: one NumPy array (or list) per field."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class EventBatch:
    user_ids: list[str]
    timestamps: np.ndarray  # float64 [N], UNIX seconds
    features: np.ndarray  # float64 [N, F], exactly as sent (stored; scored as float32)
    event_ids: list[str | None]
    index: np.ndarray  # int64 [N], position of each event in its request
    priority: int = 1  # the highest `priority` of its events: 0 low, 1 normal, 2 high

    def __len__(self) -> int:
        return len(self.user_ids)

    def select(self, keep: np.ndarray) -> EventBatch:
        """The events where the boolean mask `keep` is true."""
        if keep.all():
            return self
        return EventBatch(
            user_ids=[u for u, k in zip(self.user_ids, keep, strict=True) if k],
            timestamps=self.timestamps[keep],
            features=self.features[keep],
            event_ids=[e for e, k in zip(self.event_ids, keep, strict=True) if k],
            index=self.index[keep],
            priority=self.priority,
        )

    @staticmethod
    def concat(batches: list[EventBatch]) -> EventBatch:
        if len(batches) == 1:
            return batches[0]
        return EventBatch(
            user_ids=[u for b in batches for u in b.user_ids],
            timestamps=np.concatenate([b.timestamps for b in batches]),
            features=np.concatenate([b.features for b in batches]),
            event_ids=[e for b in batches for e in b.event_ids],
            index=np.concatenate([b.index for b in batches]),
            priority=max(b.priority for b in batches),
        )


@dataclass(slots=True)
class Rejection:
    index: int
    error: str
    raw: bytes = b""  # the event as received (possibly cut short), for the dead-letter store
    kind: str = "invalid_event"  # the metrics label: a handful of values, never free text


@dataclass(slots=True)
class IngestResult:
    """What one request (or one NDJSON chunk) came to; the `/ingest` response adds them up."""

    processed: int = 0
    duplicates: int = 0
    late: int = 0
