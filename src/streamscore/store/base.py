"""What the pipeline, the indexer and the API need from an event store, whichever it is.

A store keeps two things: a durable log (one row per group commit, written before any ack) and
history chunks (one row per user and flush, `streamscore.history.chunks`) that the indexing
process (`streamscore.history.index_worker`) writes from the log and compacts, on a store
opened with `indexer=True`. `streamscore.store.open.open_store` picks the
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


class Cell(Protocol):
    """A shared int64: a `multiprocessing.Value("q")` when the indexing runs in another
    process, a `ctypes.c_int64` otherwise."""

    value: int


class Store(Protocol):
    index_chunk: int
    indexed_seq: int  # every event with seq <= this is in history chunks

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
    def share_pending(self, cell: Cell) -> None:
        """Keep the first seq of an append in doubt (0: none) in `cell`, which the indexing
        process reads too: it must not chunk a batch that may yet be undone."""
        ...

    def indexed_up_to(self, seq: int) -> None:
        """The indexing process chunked every seq <= `seq`: stop holding those batches."""
        ...

    # indexing process
    def index_pending(self) -> int: ...
    def compact(self) -> int:
        """Merge small chunks of the users that gathered enough of them; returns the number of
        events rewritten (0: nothing to do)."""
        ...

    def add_dead_letters(self, rows: list[tuple[float, int, str, str]], keep: int) -> None: ...
    def expire_history(
        self, cutoff: float, after: RetentionCursor | None, chunk: int
    ) -> tuple[int, RetentionCursor | None]: ...

    # any thread
    def history(
        self, user_id: str, since: float, until: float, after: tuple[float, int], limit: int
    ) -> Sequence[tuple[float, float, int, dict[str, object]]]:
        """`[(ts, score, seq, details), ...]` for one user, ordered by (ts, seq), strictly after
        `after` (details: the event's `event_type`, `attributes` and experiment `variant`, those
        it has): from the chunks and the acknowledged batches not chunked yet, in one
        snapshot."""
        ...

    def export_rows(
        self, since: float, until: float, users: Sequence[str] | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """`(user_id, records JSON)` of every chunk that may hold events in [since, until] (of
        `users` only, when given), in storage order, then the acknowledged batches not chunked
        yet as chunks, in seq order, from one snapshot. Callers filter the records by time."""
        ...

    def model_versions(self) -> dict[int, str]:
        """Every registered model: its store id (the records' `model_id`) and version."""
        ...

    def scan(
        self, after: int, until: int | None = None, batch: int = 65_536
    ) -> Iterator[tuple[int, LoggedBatch]]:
        """Every event with `after < seq <= until` (default: all), in seq order, as
        (first seq, batch) (see `streamscore.store.scan`), from one snapshot; chunks are read
        only when the log no longer holds seq `after + 1`."""
        ...

    def save_state(self, key: str, value: bytes) -> None: ...
    def load_state(self, key: str) -> bytes | None: ...
    def dead_letters(self, since: float, limit: int) -> list[tuple[int, float, int, str, str]]: ...
    def close(self) -> None: ...
