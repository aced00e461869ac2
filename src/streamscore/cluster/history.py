"""The cluster's history in PostgreSQL: chunks any node reads, and each partition's progress.

A cluster named `NAME` keeps, in the PostgreSQL schema `NAME`:
- `chunks`: the same columnar history chunks as a single node's store (`history.chunks`),
  written by a partition's owner straight from the bus, one COPY per handled batch. An event's
  seq is `message sequence * MAX_EVENTS_PER_MESSAGE + position in the message`: unique in the
  cluster, equal on every redelivery, ordered as the bus ordered the messages.
- `partitions`: per partition, the last bus message whose events are in `chunks`, the owner's
  fencing epoch and the number of events stored;
- `checkpoints`: per partition, the last checkpoint of its state (`cluster.checkpoint`).

Exactly once: `commit` inserts a batch's chunks and moves `last_msg` in one transaction, and
only if `last_msg` is still what the owner last wrote and the epoch is still its own. A new
owner first raises the epoch (`claim`, with its lease's revision, which only grows), so a
deposed owner that has not noticed yet can no longer write: its commit raises `Fenced`, its
batch is not acknowledged, and the new owner, which starts after `last_msg`, handles it once.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from streamscore.cluster.partitions import check_cluster_name
from streamscore.history.chunks import Chunk
from streamscore.history.pages import page
from streamscore.store.base import StoreUnavailable

MAX_EVENTS_PER_MESSAGE = 1 << 16  # events of one bus message: seq = sequence << 16 | position


class Fenced(StoreUnavailable):
    """Another node owns the partition now (a higher epoch): this owner must stop writing."""


@dataclass(frozen=True, slots=True)
class Progress:
    last_msg: int  # every message of the partition up to this sequence is stored
    events: int


def event_seq(sequence: int, position: int) -> int:
    """The seq of the event at `position` of the bus message `sequence`.

    >>> event_seq(3, 5)
    196613
    """
    return sequence * MAX_EVENTS_PER_MESSAGE + position


class ClusterHistory:
    """One writer connection (commits of every owned partition, serialized), a read pool."""

    def __init__(self, url: str, cluster: str, timeout: float = 5.0) -> None:
        self.schema = check_cluster_name(cluster)
        self.timeout = timeout
        ms = max(1, int(timeout * 1000))
        self._options = f"-c lock_timeout={ms} -c statement_timeout={ms * 12}"
        self.url = url
        self._lock = threading.Lock()
        self._writer: psycopg.Connection | None = None
        with self._write() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
            conn.execute(self._sql(SCHEMA))
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "options": self._options},
            check=ConnectionPool.check_connection,
            open=True,
            timeout=timeout,
        )

    def _sql(self, text: str) -> str:
        # The name matches [A-Za-z0-9_-]{1,64}: quoted, it is a safe identifier.
        return text.replace("{s}", f'"{self.schema}"')

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            try:
                if self._writer is None:
                    self._writer = psycopg.connect(
                        self.url, autocommit=True, options=self._options, connect_timeout=2
                    )
                yield self._writer
            except psycopg.Error as exc:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
                raise StoreUnavailable(f"PostgreSQL write failed: {exc}") from exc

    def claim(self, partition: int, epoch: int) -> Progress:
        """Raise the partition's epoch to `epoch` (Fenced if it is already higher)."""
        with self._write() as conn, conn.transaction():
            conn.execute(
                self._sql(
                    "INSERT INTO {s}.partitions VALUES (%s, 0, 0, 0) "
                    "ON CONFLICT (partition) DO NOTHING"
                ),
                (partition,),
            )
            row = conn.execute(
                self._sql(
                    "SELECT epoch, last_msg, events FROM {s}.partitions "
                    "WHERE partition = %s FOR UPDATE"
                ),
                (partition,),
            ).fetchone()
            assert row is not None
            if row[0] > epoch:
                raise Fenced(f"partition {partition} has epoch {row[0]} > {epoch}")
            conn.execute(
                self._sql("UPDATE {s}.partitions SET epoch = %s WHERE partition = %s"),
                (epoch, partition),
            )
            return Progress(int(row[1]), int(row[2]))

    def commit(
        self,
        partition: int,
        epoch: int,
        after: int,
        last_msg: int,
        chunks: Sequence[Chunk],
        events: int,
    ) -> None:
        """Store a batch's chunks and move `last_msg` from `after`, atomically, or `Fenced`."""
        with self._write() as conn, conn.transaction():
            moved = conn.execute(
                self._sql(
                    "UPDATE {s}.partitions SET last_msg = %s, events = events + %s "
                    "WHERE partition = %s AND epoch = %s AND last_msg = %s"
                ),
                (last_msg, events, partition, epoch, after),
            ).rowcount
            if moved != 1:
                raise Fenced(f"partition {partition} moved on under epoch {epoch}")
            if chunks:
                with conn.cursor().copy(self._sql(COPY)) as copy:
                    for chunk in chunks:
                        copy.write_row(chunk.row())

    def save_checkpoint(self, partition: int, epoch: int, last_msg: int, state: bytes) -> None:
        """Keep a checkpoint taken after `last_msg`, if the epoch is still ours (else Fenced)."""
        with self._write() as conn, conn.transaction():
            row = conn.execute(
                self._sql("SELECT epoch FROM {s}.partitions WHERE partition = %s FOR SHARE"),
                (partition,),
            ).fetchone()
            if row is None or row[0] != epoch:
                raise Fenced(f"partition {partition} is no longer at epoch {epoch}")
            conn.execute(
                self._sql(
                    "INSERT INTO {s}.checkpoints VALUES (%s, %s, %s) ON CONFLICT (partition) "
                    "DO UPDATE SET last_msg = excluded.last_msg, state = excluded.state"
                ),
                (partition, last_msg, state),
            )

    def load_checkpoint(self, partition: int) -> bytes | None:
        with self._reader() as conn:
            row = conn.execute(
                self._sql("SELECT state FROM {s}.checkpoints WHERE partition = %s"), (partition,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise StoreUnavailable(f"PostgreSQL read failed: {exc}") from exc

    def history(
        self, user_id: str, since: float, until: float, after: tuple[float, int], limit: int
    ) -> list[tuple[float, float, int, dict[str, object]]]:
        """A history page of one user, from any node (see `history.pages.page`)."""
        with self._reader() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            refs = conn.execute(
                self._sql(
                    "SELECT first_seq, min_ts, count FROM {s}.chunks "
                    "WHERE user_id = %s AND max_ts >= %s AND min_ts <= %s"
                ),
                (user_id, max(since, after[0]), until),
            ).fetchall()

            def fetch(first_seqs: list[Hashable]) -> list[tuple[bytes, str | None]]:
                return conn.execute(
                    self._sql(
                        "SELECT keys, details FROM {s}.chunks "
                        "WHERE user_id = %s AND first_seq = ANY(%s)"
                    ),
                    (user_id, first_seqs),
                    binary=True,
                ).fetchall()

            return page(refs, fetch, None, since, until, after, limit)

    def totals(self) -> dict[int, Progress]:
        """Every partition's progress and counters."""
        with self._reader() as conn:
            rows = conn.execute(
                self._sql("SELECT partition, last_msg, events FROM {s}.partitions")
            ).fetchall()
        return {int(p): Progress(int(m), int(e)) for p, m, e in rows}

    def drop(self) -> None:
        """Remove the cluster's schema (tests, and tearing a cluster down for good)."""
        with self._write() as conn:
            conn.execute(self._sql("DROP SCHEMA IF EXISTS {s} CASCADE"))

    def close(self) -> None:
        self._pool.close()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.chunks (
    user_id   text NOT NULL,
    min_ts    double precision NOT NULL,
    max_ts    double precision NOT NULL,
    first_seq bigint NOT NULL,
    count     integer NOT NULL,
    keys      bytea NOT NULL,
    records   text NOT NULL,
    details   text,
    PRIMARY KEY (user_id, first_seq)
);
ALTER TABLE {s}.chunks ALTER COLUMN keys SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS chunks_by_user ON {s}.chunks (user_id, max_ts)
    INCLUDE (min_ts, count, first_seq);
CREATE TABLE IF NOT EXISTS {s}.partitions (
    partition  integer PRIMARY KEY,
    epoch      bigint NOT NULL,
    last_msg   bigint NOT NULL,
    events     bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.checkpoints (
    partition integer PRIMARY KEY,
    last_msg  bigint NOT NULL,
    state     bytea NOT NULL
);
"""

COPY = (
    "COPY {s}.chunks (user_id, min_ts, max_ts, first_seq, count, keys, records, details) FROM STDIN"
)
