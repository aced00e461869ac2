"""The PostgreSQL store: the same log + history design as the SQLite store, on a server.

The ack path inserts one `batches` row per group commit (the events in `log_codec` format) and
commits; the default `synchronous_commit=on` means the commit is on the server's disk before
any request of the group is acknowledged. The indexer thread expands logged batches into
`history` with one COPY per chunk, off the ack path.

`history` is partitioned by day of event time (native declarative partitioning), so retention
detaches and drops whole partitions instead of deleting rows. Partitions are created on demand
by the indexer, just before the COPY that needs them.

The schema is versioned in `meta`: the service applies the migrations it knows, in order, and
refuses to start on a schema newer than those. One service per database: a session advisory
lock refuses a second one, because sequence numbers are assigned in process.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import msgspec
import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from streamscore.store import log_codec
from streamscore.store.base import RetentionCursor, SchemaTooNew, StoreUnavailable
from streamscore.store.log_codec import LoggedBatch

log = logging.getLogger(__name__)

DAY = 86_400.0
LOCK_KEY = 0x5354_5245_414D  # pg advisory lock id: one streamscore per database

MIGRATIONS = [
    # 1: log, counters, partitioned history, models, dead letters
    """
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE models (
        model_id   serial PRIMARY KEY,
        version    text NOT NULL UNIQUE,
        created_at double precision NOT NULL
    );
    CREATE TABLE batches (
        first_seq bigint PRIMARY KEY,  -- event i of the batch has seq first_seq + i
        count     integer NOT NULL,
        model_id  integer NOT NULL,
        events    bytea NOT NULL       -- the batch in streamscore.store.log_codec format
    );
    CREATE TABLE counters (name text PRIMARY KEY, value double precision NOT NULL);
    INSERT INTO counters VALUES
        ('events', 0), ('late', 0), ('duplicates', 0), ('stream_time', -1e300);
    CREATE TABLE history (
        user_id  text NOT NULL,
        ts       double precision NOT NULL,
        seq      bigint NOT NULL,
        score    double precision NOT NULL,
        event_id text,
        model_id integer NOT NULL,
        features double precision[] NOT NULL,
        PRIMARY KEY (user_id, ts, seq)
    ) PARTITION BY RANGE (ts);
    CREATE VIEW events AS
        SELECT h.user_id, h.ts AS timestamp, h.score, h.event_id, m.version AS model_version,
               h.features, h.seq
        FROM history AS h JOIN models AS m USING (model_id);
    CREATE TABLE dead_letters (
        id          bigserial PRIMARY KEY,
        received_at double precision NOT NULL,
        idx         integer NOT NULL,
        error       text NOT NULL,
        raw         text NOT NULL
    );
    INSERT INTO meta VALUES ('indexed_seq', '0');
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

COUNT = """
UPDATE counters SET value = CASE name
    WHEN 'events' THEN value + %(events)s
    WHEN 'late' THEN value + %(late)s
    WHEN 'duplicates' THEN value + %(duplicates)s
    WHEN 'stream_time' THEN greatest(value, %(stream_time)s)
END
"""

HISTORY = """
SELECT ts, score, seq FROM history
WHERE user_id = %s AND ts >= %s AND ts <= %s AND (ts, seq) > (%s, %s)
ORDER BY ts, seq LIMIT %s
"""

COPY = "COPY history (user_id, ts, seq, score, event_id, model_id, features) FROM STDIN"

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(values: list[str]) -> list[str]:
    """Text values escaped for COPY's text format (only when one needs it: the common case is free)."""
    joined = "".join(values)
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        return [v.translate(_COPY_ESCAPES) for v in values]
    return values


def _floats(values: np.ndarray) -> list[str]:
    """Shortest round-trip decimal text of each float (msgspec formats them in C)."""
    return msgspec.json.encode(values.tolist()).decode()[1:-1].split(",")


def copy_rows(first_seq: int, model_id: int, batch: LoggedBatch) -> str:
    """The batch as COPY text rows: user_id, ts, seq, score, event_id, model_id, features."""
    n = len(batch.user_ids)
    if not n:
        return ""
    features = msgspec.json.encode(batch.features.tolist()).decode()[2:-2].split("],[")
    events = _copy_field([r"\N" if e is None else e for e in batch.event_ids])
    tail = f"\t{model_id}\t{{"
    lines = [
        f"{u}\t{t}\t{seq}\t{s}\t{e}{tail}{f}}}\n"
        for u, t, seq, s, e, f in zip(
            _copy_field(batch.user_ids),
            _floats(batch.timestamps),
            range(first_seq, first_seq + n),
            _floats(batch.scores.astype(np.float64)),
            events,
            features,
            strict=True,
        )
    ]
    return "".join(lines)


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by `***` (for logs and errors)."""
    password = urlsplit(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def _partition(day: int) -> str:
    return f"history_d{day}" if day >= 0 else f"history_dm{-day}"


class PostgresStore:
    """One writer connection appends, one indexer connection indexes, a pool serves reads."""

    def __init__(self, url: str, index_chunk: int = 250_000, timeout: float = 5.0) -> None:
        self.url = url
        self.index_chunk = index_chunk
        self.timeout = timeout
        ms = max(1, int(timeout * 1000))
        self._options = f"-c lock_timeout={ms} -c statement_timeout={ms * 12}"
        self._guard = self._connect()
        if not self._guard.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            self._guard.close()
            raise StoreUnavailable(f"another streamscore is using {redact(self.url)}")
        self._migrate(self._guard)
        self._writer: psycopg.Connection | None = None
        self._indexer: psycopg.Connection | None = None
        self._indexer_lock = threading.Lock()
        self.indexed_seq = int(
            self._guard.execute("SELECT value FROM meta WHERE key='indexed_seq'").fetchone()[0]
        )
        self._days = self._existing_days()
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True, "options": self._options},
            check=ConnectionPool.check_connection,  # a server restart costs no failed read
            open=True,
            timeout=timeout,
        )

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                options=self._options,
                connect_timeout=max(1, math.ceil(self.timeout)),
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    # -- startup -------------------------------------------------------------------------

    def _migrate(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY + 1,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"the database has schema version {current}; "
                    f"this streamscore knows {SCHEMA_VERSION}"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                conn.execute(MIGRATIONS[version - 1])  # type: ignore[arg-type]
                log.info("migrated the PostgreSQL schema", extra={"version": version})
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (max(current, SCHEMA_VERSION),))

    def _existing_days(self) -> set[int]:
        """Day partitions of history; finishes a retention drop that a crash interrupted."""
        rows = self._guard.execute(
            "SELECT c.relname, i.inhdetachpending FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'history'::regclass"
        ).fetchall()
        for name, pending in rows:
            if pending:
                self._guard.execute(f"ALTER TABLE history DETACH PARTITION {name} FINALIZE")
                self._guard.execute(f"DROP TABLE {name}")
        return {_day_of(name) for name, pending in rows if not pending}

    def register_model(self, version: str) -> int:
        conn = self._guard
        conn.execute(
            "INSERT INTO models (version, created_at) VALUES (%s, %s) "
            "ON CONFLICT (version) DO NOTHING",
            (version, time.time()),
        )
        return conn.execute("SELECT model_id FROM models WHERE version=%s", (version,)).fetchone()[
            0
        ]

    def counters(self) -> dict[str, float]:
        return dict(self._guard.execute("SELECT name, value FROM counters").fetchall())

    def last_seq(self) -> int:
        row = self._guard.execute("SELECT max(first_seq + count - 1) FROM batches").fetchone()
        return max(row[0] or 0, self.indexed_seq)

    def logged_batches(self) -> Iterator[LoggedBatch]:
        """Every logged batch, in arrival order, streamed through a server-side cursor."""
        with self._guard.transaction(), self._guard.cursor(name="recover") as cur:
            cur.itersize = 64
            cur.execute("SELECT events FROM batches ORDER BY first_seq")
            for (blob,) in cur:
                yield log_codec.decode(blob)

    # -- writer thread -------------------------------------------------------------------

    def _writer_conn(self) -> psycopg.Connection:
        if self._writer is None:
            self._writer = self._connect()
        return self._writer

    def _drop(self, conn: psycopg.Connection | None) -> None:
        """Forget a connection after a failure: the next use reconnects with fresh session
        settings, which is how the store recovers from a restart or a read-only spell."""
        if conn is not None:
            conn.close()
        if conn is self._writer:
            self._writer = None
        if conn is self._indexer:
            self._indexer = None

    def append(
        self,
        first_seq: int,
        events: bytes,
        model_id: int,
        late: int,
        duplicates: int,
        stream_time: float,
        count: int,
    ) -> None:
        """Log one batch and commit, or raise `StoreUnavailable` with nothing kept."""
        try:
            conn = self._writer_conn()
            with conn.transaction():
                if count:
                    conn.execute(
                        "INSERT INTO batches VALUES (%s, %s, %s, %s)",
                        (first_seq, count, model_id, events),
                    )
                conn.execute(
                    COUNT,
                    {
                        "events": count,
                        "late": late,
                        "duplicates": duplicates,
                        "stream_time": stream_time,
                    },
                )
        except psycopg.Error as exc:
            self._drop(self._writer)
            raise StoreUnavailable(f"event log write failed: {exc}".strip()) from exc

    def truncate_log(self, up_to_seq: int) -> None:
        try:
            self._writer_conn().execute(
                "DELETE FROM batches WHERE first_seq + count - 1 <= %s",
                (min(up_to_seq, self.indexed_seq),),
            )
        except (psycopg.Error, StoreUnavailable) as exc:  # the next truncation retries
            self._drop(self._writer)
            log.warning("event log truncation failed: %s", exc)

    # -- indexer thread ------------------------------------------------------------------

    @contextmanager
    def _indexer_conn(self) -> Iterator[psycopg.Connection]:
        """The indexer thread's connection, dropped if a statement on it fails."""
        with self._indexer_lock:
            if self._indexer is None:
                self._indexer = self._connect()
            try:
                yield self._indexer
            except psycopg.Error:
                self._drop(self._indexer)
                raise

    def index_pending(self) -> int:
        """COPY the next logged batches (about `index_chunk` events) into `history`."""
        with self._indexer_conn() as conn:
            low = self.indexed_seq
            spans = conn.execute(
                "SELECT first_seq, count FROM batches WHERE first_seq > %s "
                "ORDER BY first_seq LIMIT 1000",
                (low,),
            ).fetchall()
            moved, high = 0, low
            for first_seq, count in spans:
                if moved and moved + count > self.index_chunk:
                    break
                moved += count
                high = first_seq + count - 1
            if not moved:
                return 0
            blobs = conn.execute(
                "SELECT first_seq, model_id, events FROM batches "
                "WHERE first_seq > %s AND first_seq <= %s ORDER BY first_seq",
                (low, high),
            ).fetchall()
            batches = [(s, m, log_codec.decode(b)) for s, m, b in blobs]
            self._ensure_partitions(conn, np.concatenate([b.timestamps for *_, b in batches]))
            with conn.transaction():
                with conn.cursor().copy(COPY) as copy:
                    for first_seq, model_id, batch in batches:
                        copy.write(copy_rows(first_seq, model_id, batch))
                conn.execute("UPDATE meta SET value=%s WHERE key='indexed_seq'", (str(high),))
            self.indexed_seq = high
            return moved

    def _ensure_partitions(self, conn: psycopg.Connection, timestamps: np.ndarray) -> None:
        for day in np.unique(np.floor(timestamps / DAY)).astype(np.int64).tolist():
            if day in self._days:
                continue
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_partition(day)} PARTITION OF history "
                f"FOR VALUES FROM ({day * DAY!r}) TO ({(day + 1) * DAY!r})"
            )
            self._days.add(day)

    def add_dead_letters(self, rows: list[tuple[float, int, str, str]], keep: int) -> None:
        clean = [  # PostgreSQL text cannot hold NUL
            (at, idx, err.replace("\0", "\ufffd"), raw.replace("\0", "\ufffd"))
            for at, idx, err, raw in rows
        ]
        with self._indexer_conn() as conn, conn.transaction():
            conn.cursor().executemany(
                "INSERT INTO dead_letters (received_at, idx, error, raw) VALUES (%s, %s, %s, %s)",
                clean,
            )
            conn.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - %s",
                (keep,),
            )

    def expire_history(
        self, cutoff: float, after: RetentionCursor | None, chunk: int
    ) -> tuple[int, RetentionCursor | None]:
        """Drop one day partition that ends at or before `cutoff`; the cursor is not None
        while more such partitions remain. Rows are removed a whole day at a time, so history
        keeps up to one day more than the retention asks for."""
        expired = sorted(day for day in self._days if (day + 1) * DAY <= cutoff)
        if not expired:
            return 0, None
        with self._indexer_conn() as conn:
            name = _partition(expired[0])
            (rows,) = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            # CONCURRENTLY: readers and the indexer's COPY into other days never wait on it.
            conn.execute(f"ALTER TABLE history DETACH PARTITION {name} CONCURRENTLY")
            conn.execute(f"DROP TABLE {name}")
            self._days.discard(expired[0])
            return rows, (expired[1] if len(expired) > 1 else None)

    # -- readers (any thread) -------------------------------------------------------------

    def history(
        self, user_id: str, since: float, until: float, after: tuple[float, int], limit: int
    ) -> Sequence[Sequence[float]]:
        """`[(ts, score, seq), ...]` for one user, ordered by (ts, seq), strictly after `after`."""
        with self._pool.connection() as conn:
            return conn.execute(HISTORY, (user_id, since, until, *after, limit)).fetchall()

    def dead_letters(self, since: float, limit: int) -> list[tuple[int, float, int, str, str]]:
        with self._pool.connection() as conn:
            return conn.execute(
                "SELECT id, received_at, idx, error, raw FROM dead_letters "
                "WHERE received_at >= %s ORDER BY id LIMIT %s",
                (since, limit),
            ).fetchall()

    def close(self) -> None:
        self._pool.close()
        for conn in (self._writer, self._indexer, self._guard):
            if conn is not None:
                conn.close()


def _day_of(partition: str) -> int:
    digits = partition.removeprefix("history_d")
    return -int(digits[1:]) if digits.startswith("m") else int(digits)
