"""What flows through the pipeline: a request's events as one columnar batch (one NumPy array or
list per field), the rejections found on the way, and what a request came to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")
Attributes = dict[str, float | str | bool]  # an event's `attributes` object

LOW, NORMAL, HIGH = 0, 1, 2
PRIORITIES = {"low": LOW, "normal": NORMAL, "high": HIGH}
SIMULATED_PREFIX = "sim:"  # user ids of the built-in simulator; real events may not use it


@dataclass(slots=True)
class EventBatch:
    user_ids: list[str]
    timestamps: np.ndarray  # float64 [N], UNIX seconds
    features: np.ndarray  # float64 [N, F], exactly as sent (stored; scored as float32)
    event_ids: list[str | None]
    index: np.ndarray  # int64 [N], position of each event in its request
    priority: int = NORMAL  # the highest `priority` of its events
    event_types: list[str | None] | None = None  # None: no event of the batch has one
    attributes: list[Attributes | None] | None = None  # None: no event of the batch has any

    def __len__(self) -> int:
        return len(self.user_ids)

    def select(self, keep: np.ndarray) -> EventBatch:
        """The events where the boolean mask `keep` is true."""
        if keep.all():
            return self
        return EventBatch(
            user_ids=_pick(self.user_ids, keep),
            timestamps=self.timestamps[keep],
            features=self.features[keep],
            event_ids=_pick(self.event_ids, keep),
            index=self.index[keep],
            priority=self.priority,
            event_types=None if self.event_types is None else _pick(self.event_types, keep),
            attributes=None if self.attributes is None else _pick(self.attributes, keep),
        )

    @staticmethod
    def empty(n_features: int) -> EventBatch:
        return EventBatch(
            [], np.zeros(0), np.zeros((0, n_features)), [], np.zeros(0, dtype=np.int64)
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
            event_types=_concat_optional([(b.event_types, len(b)) for b in batches]),
            attributes=_concat_optional([(b.attributes, len(b)) for b in batches]),
        )


def _pick(values: list[T], keep: np.ndarray) -> list[T]:
    return [v for v, k in zip(values, keep, strict=True) if k]


def _concat_optional(columns: list[tuple[list[T] | None, int]]) -> list[T | None] | None:
    """Concatenated optional columns; a batch without the column contributes Nones."""
    if all(column is None for column, _ in columns):
        return None
    return [v for column, n in columns for v in (column if column is not None else [None] * n)]


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

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            self.processed + other.processed,
            self.duplicates + other.duplicates,
            self.late + other.late,
        )
