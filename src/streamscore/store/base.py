"""What the pipeline, the indexer and the API need from an event store, whichever it is.

A store keeps two things: a durable log (one row per group commit, written before any ack) and
a history index that a background thread fills from the log. `streamscore.store.open.open_store` picks the
implementation from the `--store` URL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from streamscore.store.log_codec import LoggedBatch

RetentionCursor = object  # opaque to callers: where the next retention step resumes


class StoreUnavailable(RuntimeError):
    """The store refused a write (disk full, read-only, locked, unreachable): nothing is kept."""


class SchemaTooNew(RuntimeError):
    """The store was written by a newer streamscore; refusing to touch it."""


class Store(Protocol):
    index_chunk: int
    indexed_seq: int  # every event with seq <= this is in the history index

    def register_model(self, version: str) -> int: ...
    def counters(self) -> dict[str, float]: ...
    def last_seq(self) -> int: ...
    def logged_batches(self) -> Iterator[LoggedBatch]: ...

    # writer thread
    def append(
        self,
        first_seq: int,
        events: bytes,
        model_id: int,
        late: int,
        duplicates: int,
        stream_time: float,
        count: int,
    ) -> None: ...
    def truncate_log(self, up_to_seq: int) -> None: ...

    # indexer thread
    def index_pending(self) -> int: ...
    def add_dead_letters(self, rows: list[tuple[float, int, str, str]], keep: int) -> None: ...
    def expire_history(
        self, cutoff: float, after: RetentionCursor | None, chunk: int
    ) -> tuple[int, RetentionCursor | None]: ...

    # any thread
    def history(
        self, user_id: str, since: float, until: float, after: tuple[float, int], limit: int
    ) -> Sequence[Sequence[float]]: ...
    def dead_letters(self, since: float, limit: int) -> list[tuple[int, float, int, str, str]]: ...
    def close(self) -> None: ...
