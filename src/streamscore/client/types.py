"""What the client sends and gets back, typed; decoded with msgspec straight from the responses.

Unknown response fields are ignored, so a newer server does not break an older client.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Event(msgspec.Struct, omit_defaults=True):
    """One event; plain dicts with the same keys are accepted too.

    Fields left at their defaults are not sent. `event_type` and `attributes` are ignored by
    servers that predate the feature engine.
    """

    user_id: str
    timestamp: float
    features: list[float] | None = None
    event_id: str | None = None
    priority: Literal["low", "normal", "high"] = "normal"
    event_type: str | None = None
    attributes: dict[str, float | str | bool] | None = None


class EventError(msgspec.Struct, frozen=True):
    """A rejected event: its position in the caller's list (or stream) and the reason."""

    index: int
    error: str


class IngestResult(msgspec.Struct):
    processed: int
    rejected: int
    duplicates: int
    late: int
    errors: list[EventError]
    errors_truncated: bool

    @classmethod
    def empty(cls) -> IngestResult:
        return cls(0, 0, 0, 0, [], False)

    def add(self, other: IngestResult, offset: int, max_errors: int) -> None:
        """Fold in one request's result, whose indices start at `offset` of the caller's events.

        >>> total = IngestResult.empty()
        >>> total.add(IngestResult(2, 1, 0, 0, [EventError(1, "bad")], False), 0, 10)
        >>> total.add(IngestResult(3, 1, 1, 0, [EventError(0, "worse")], False), 3, 10)
        >>> total.processed, total.rejected, total.duplicates, [e.index for e in total.errors]
        (5, 2, 1, [1, 3])
        """
        self.processed += other.processed
        self.rejected += other.rejected
        self.duplicates += other.duplicates
        self.late += other.late
        room = max_errors - len(self.errors)
        shifted = [EventError(e.index + offset, e.error) for e in other.errors[: max(room, 0)]]
        self.errors.extend(shifted)
        self.errors_truncated = (
            self.errors_truncated or other.errors_truncated or len(other.errors) > room
        )


class Median(msgspec.Struct, frozen=True):
    """The user's rolling median over the window `[window_start, window_end]` of stream time."""

    user_id: str
    median: float | None
    count: int
    window_start: float | None
    window_end: float | None


class HistoryPoint(msgspec.Struct, frozen=True):
    timestamp: float
    score: float
    event_type: str | None = None
    attributes: dict[str, float | str | bool] | None = None
    variant: str | None = None  # the experiment variant that scored it, while one ran


class HistoryPage(msgspec.Struct):
    user_id: str
    history: list[HistoryPoint]
    next_cursor: str | None


class Stats(msgspec.Struct, frozen=True):
    """The service's counters (`GET /stats`); the fields clients most rely on."""

    event_count: int
    users_tracked: int
    median_of_medians: float | None
    ingest_requests: int
    rejected_events: int
    late_events: int
    duplicate_events: int
    in_flight_events: int
    index_lag_events: int
    stream_time: float | None
    window_seconds: float
    model_version: str
    uptime_seconds: float


class FeatureValue(msgspec.Struct, frozen=True):
    """A feature's value; windowed ones carry the inclusive bounds they were computed over."""

    value: float | int | str | bool | None
    window_start: float | None = None
    window_end: float | None = None


class Features(msgspec.Struct, frozen=True):
    """`GET /users/{id}/features` (issue 14's shape)."""

    user_id: str
    version: str
    stream_time: float | None
    features: dict[str, FeatureValue]


class Lookup(msgspec.Struct, frozen=True):
    """`POST /features/lookup`: one `Features` per requested user, in request order."""

    users: list[Features]
