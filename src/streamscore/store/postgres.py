"""The PostgreSQL store: the same log + history design as the SQLite store, on a server.

The ack path inserts one `batches` row per group commit (the events in `log_codec` format) and
commits; the default `synchronous_commit=on` means the commit is on the server's disk before
any request of the group is acknowledged. The indexing process writes logged batches into
`history_chunks` (one row per user and flush, `streamscore.history.chunks`) with one COPY per
flush, off the ack path, and compacts them. Pages read chunks plus the unchunked log tail in
one REPEATABLE READ snapshot, so an acknowledged event is readable at once.

`history_chunks` is partitioned by the day of its chunks (a chunk holds one user's events of
one UTC day; native declarative partitioning), so retention detaches and drops whole partitions
instead of deleting rows. Partitions are created on demand by the indexing process, just
before the COPY that needs them.

The schema is versioned in `meta`: the service applies the migrations it knows, in order, and
refuses to start on a schema newer than those. One service per database: a session advisory
lock refuses a second one, because sequence numbers are assigned in process.

The lock is held by the writer's own session, so losing that session (a server restart, a
terminated backend, a cut connection) loses the lock and the ability to write together: the
next write reconnects and takes the lock again before anything else, waiting at most
`lock_timeout` for the old session to be gone. While another streamscore holds it, every write
is refused (503). Holding the lock again also proves the old session is finished, which is
what makes a lost COMMIT reply decidable (see `append`).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from streamscore.history import chunks as chunk_codec
from streamscore.history.compaction import TARGET, Compaction
from streamscore.history.pages import page
from streamscore.history.tail import Tail, snapshot_keys
from streamscore.store import log_codec
from streamscore.store.base import Cell, RetentionCursor, SchemaTooNew, StoreUnavailable
from streamscore.store.log_codec import LoggedBatch
from streamscore.store.scan import scan_snapshot

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
    # 2: columnar chunks per (user, flush); version-1 rows become chunks of up to TARGET events
    # per user and day, built in SQL (float8send & co. write the chunks' big-endian keys).
    f"""
    CREATE TABLE history_chunks (
        user_id   text NOT NULL,
        min_ts    double precision NOT NULL,
        max_ts    double precision NOT NULL,
        first_seq bigint NOT NULL,   -- the chunk's smallest seq
        count     integer NOT NULL,
        keys      bytea NOT NULL,    -- streamscore.history.chunks keys: read by pages
        records   text NOT NULL,     -- the events as JSON rows: read by the events view
        PRIMARY KEY (user_id, first_seq, min_ts)
    ) PARTITION BY RANGE (min_ts);
    -- keys are float noise that pglz barely shrinks: store them uncompressed, read them fast
    ALTER TABLE history_chunks ALTER COLUMN keys SET STORAGE EXTERNAL;
    CREATE INDEX history_chunks_by_user ON history_chunks (user_id, max_ts)
        INCLUDE (min_ts, count, first_seq);
    DO $$
    DECLARE d bigint;
    BEGIN
        FOR d IN SELECT DISTINCT floor(ts / {DAY})::bigint FROM history LOOP
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF history_chunks FOR VALUES FROM (%s) TO (%s)',
                CASE WHEN d >= 0 THEN 'history_chunks_d' || d ELSE 'history_chunks_dm' || -d END,
                d * {DAY}, (d + 1) * {DAY});
        END LOOP;
    END $$;
    INSERT INTO history_chunks
    SELECT user_id, min(ts), max(ts), min(seq), count(*),
           string_agg(float8send(ts), '' ORDER BY ts, seq)
           || string_agg(int8send(seq), '' ORDER BY ts, seq)
           || string_agg(float4send(score::real), '' ORDER BY ts, seq),
           json_agg(json_build_array(ts, score, seq, event_id, model_id, features)
                    ORDER BY ts, seq)::text
    FROM (
        SELECT *, (row_number() OVER w - 1) / {TARGET} AS part
        FROM history WINDOW w AS (PARTITION BY user_id, floor(ts / {DAY}) ORDER BY ts, seq)
    ) AS numbered
    GROUP BY user_id, floor(ts / {DAY}), part;
    DROP VIEW events;
    DROP TABLE history;
    CREATE VIEW events AS
        SELECT c.user_id, (r->>0)::double precision AS timestamp,
               (r->>1)::double precision AS score, r->>3 AS event_id,
               m.version AS model_version,
               ARRAY(SELECT json_array_elements_text(r->5)::double precision) AS features,
               (r->>2)::bigint AS seq
        FROM history_chunks AS c
        CROSS JOIN LATERAL json_array_elements(c.records::json) AS r
        JOIN models AS m ON m.model_id = (r->>4)::integer;
    """,
    # 3: named blobs of the service's own state (drift references, feature checkpoints, ...)
    """
    CREATE TABLE state (key text PRIMARY KEY, value bytea NOT NULL, updated_at float8 NOT NULL)
    """,
    # 4: each chunk's event details (event type, attributes, variant), for history pages
    "ALTER TABLE history_chunks ADD COLUMN details text",
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

COPY = (
    "COPY history_chunks (user_id, min_ts, max_ts, first_seq, count, keys, records, details) "
    "FROM STDIN"
)

COMPACT_USERS = 256  # users visited per compaction step
SMALL_BY_USER = "SELECT user_id, count(*) FROM history_chunks WHERE count < %s GROUP BY user_id"
SMALL_CHUNKS = (
    "SELECT first_seq, count, min_ts FROM history_chunks "
    "WHERE user_id = %s AND count < %s ORDER BY min_ts"
)
BATCH_ROWS = "SELECT first_seq, count, events FROM batches WHERE first_seq > %s ORDER BY first_seq"


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by `***` (for logs and errors)."""
    password = urlsplit(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def _partition(day: int) -> str:
    return f"history_chunks_d{day}" if day >= 0 else f"history_chunks_dm{-day}"


class PostgresStore:
    """One writer connection appends, a pool serves reads; the indexing process chunks and
    compacts on a store of its own (`indexer=True`)."""

    def __init__(
        self, url: str, index_chunk: int = 250_000, timeout: float = 5.0, indexer: bool = False
    ) -> None:
        self.url = url
        self.index_chunk = index_chunk
        self.timeout = timeout
        ms = max(1, int(timeout * 1000))
        self._options = f"-c lock_timeout={ms} -c statement_timeout={ms * 12}"
        self._writer: psycopg.Connection | None = None
        if not indexer:  # the indexing process runs beside the service that holds the lock
            self._writer = self._connect()
            lock = self._writer.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
            if not lock.fetchone()[0]:
                self._writer.close()
                raise StoreUnavailable(f"another streamscore is using {redact(self.url)}")
        self._guard = self._connect()
        if not indexer:
            self._migrate(self._guard)
        self._pending_cell: Cell = ctypes.c_int64(0)  # first seq of an append in doubt, or 0
        self._unsettled: tuple[int, int, str, dict[str, float]] | None = None
        self._indexer: psycopg.Connection | None = None
        self._indexer_lock = threading.Lock()
        self.indexed_seq = int(
            self._guard.execute("SELECT value FROM meta WHERE key='indexed_seq'").fetchone()[0]
        )
        self._days = self._existing_days()
        self._tail = Tail()
        self._compaction = Compaction(COMPACT_USERS)
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
        """Day partitions of history_chunks; finishes a retention drop that a crash interrupted."""
        rows = self._guard.execute(
            "SELECT c.relname, i.inhdetachpending FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'history_chunks'::regclass"
        ).fetchall()
        for name, pending in rows:
            if pending:
                self._guard.execute(f"ALTER TABLE history_chunks DETACH PARTITION {name} FINALIZE")
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
        """The writer's session, holding the single-instance lock (taken again on reconnect)."""
        if self._writer is None:
            conn = self._connect()
            try:  # waits for a dead session of ours to go, at most lock_timeout
                conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            except psycopg.Error as exc:
                conn.close()
                log.error("cannot take the single-instance lock back: %s", exc)
                raise StoreUnavailable(
                    f"another streamscore holds {redact(self.url)}: writes refused"
                ) from exc
            self._writer = conn
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
        """Log one batch and commit: returns once it is committed, raises `StoreUnavailable`
        once it is known not to be.

        A failure may hide a commit (the server committed, the reply was lost): the store then
        reconnects, which takes the lock and so waits for the old session to end, and looks
        for the batch by (first_seq, count, md5 of its bytes). Found: committed, return. Still
        unreachable: the outcome stays unsettled, the caller is told "not committed", and the
        next append first makes that true by deleting the batch if it did land. So a seq never
        holds other events than the ones reported, and `first_seq` is never reused.
        """
        delta = {"events": count, "late": late, "duplicates": duplicates}
        if self._unsettled is not None:
            self._settle()
        digest = hashlib.md5(events, usedforsecurity=False).hexdigest()
        try:
            conn = self._writer_conn()
            if count:
                self._pending = first_seq  # the chunker leaves it alone until it is settled
            with conn.transaction():
                if count:
                    conn.execute(
                        "INSERT INTO batches VALUES (%s, %s, %s, %s)",
                        (first_seq, count, model_id, events),
                    )
                conn.execute(COUNT, delta | {"stream_time": stream_time})
        except psycopg.Error as exc:
            self._drop(self._writer)
            if count and self._landed(first_seq, count, digest, delta):
                log.warning("the reply to a commit was lost; batch %d is committed", first_seq)
                return
            raise StoreUnavailable(f"event log write failed: {exc}".strip()) from exc
        finally:
            if self._unsettled is None:
                self._pending = None

    def _landed(self, first_seq: int, count: int, digest: str, delta: dict[str, float]) -> bool:
        """Whether a failed append committed after all; unsettled if that cannot be known."""
        try:
            row = (
                self._writer_conn()
                .execute(
                    "SELECT count, md5(events) FROM batches WHERE first_seq = %s", (first_seq,)
                )
                .fetchone()
            )
        except (psycopg.Error, StoreUnavailable) as exc:
            self._drop(self._writer)
            self._unsettled = (first_seq, count, digest, delta)
            log.error(
                "cannot tell whether batch %d committed; undone before the next: %s", first_seq, exc
            )
            return False
        return row == (count, digest)

    def _settle(self) -> None:
        """Undo the unsettled batch if it landed, so that the log matches what was reported.

        Under the chunker's lock: the chunker never indexes a batch being undone."""
        assert self._unsettled is not None
        first_seq, count, digest, delta = self._unsettled
        undo = {name: -value for name, value in delta.items()} | {"stream_time": -math.inf}
        with self._indexer_lock:
            try:
                conn = self._writer_conn()
                with conn.transaction():
                    landed = conn.execute(
                        "DELETE FROM batches WHERE first_seq = %s AND count = %s "
                        "AND md5(events) = %s RETURNING first_seq",
                        (first_seq, count, digest),
                    ).fetchone()
                    if landed:
                        conn.execute(COUNT, undo)
            except psycopg.Error as exc:
                self._drop(self._writer)
                raise StoreUnavailable(f"event log unreachable: {exc}".strip()) from exc
            self._unsettled = self._pending = None
            if landed:
                self._tail = Tail()  # pages may have read the undone batch
                log.warning("undid batch %d, committed after its requests were refused", first_seq)

    @property
    def _pending(self) -> int | None:
        return self._pending_cell.value or None

    @_pending.setter
    def _pending(self, first_seq: int | None) -> None:
        self._pending_cell.value = first_seq or 0

    def share_pending(self, cell: Cell) -> None:
        cell.value = self._pending_cell.value
        self._pending_cell = cell

    def indexed_up_to(self, seq: int) -> None:
        self._tail.forget(seq)
        self.indexed_seq = max(self.indexed_seq, seq)

    def truncate_log(self, up_to_seq: int) -> None:
        try:
            self._writer_conn().execute(
                "DELETE FROM batches WHERE first_seq + count - 1 <= %s",
                (min(up_to_seq, self.indexed_seq),),
            )
        except (psycopg.Error, StoreUnavailable) as exc:  # the next truncation retries
            self._drop(self._writer)
            log.warning("event log truncation failed: %s", exc)

    # -- indexing process ------------------------------------------------------------------

    @contextmanager
    def _indexer_conn(self) -> Iterator[psycopg.Connection]:
        """The indexing (or dead letters') connection, dropped if a statement on it fails."""
        with self._indexer_lock:
            if self._indexer is None:
                self._indexer = self._connect()
            try:
                yield self._indexer
            except psycopg.Error:
                self._drop(self._indexer)
                raise

    def index_pending(self) -> int:
        """COPY the next logged batches (about `index_chunk` events) into `history_chunks`."""
        with self._indexer_conn() as conn:
            low = self.indexed_seq
            spans = conn.execute(
                "SELECT first_seq, count FROM batches WHERE first_seq > %s "
                "ORDER BY first_seq LIMIT 1000",
                (low,),
            ).fetchall()
            pending = self._pending  # read after the query: a batch it saw is still pending
            if pending is not None:
                spans = [span for span in spans if span[0] < pending]
            taken = chunk_codec.take(spans, self.index_chunk)
            if not taken:
                return 0
            moved = sum(count for _, count in taken)
            high = taken[-1][0] + taken[-1][1] - 1
            blobs = conn.execute(
                "SELECT first_seq, model_id, events FROM batches "
                "WHERE first_seq > %s AND first_seq <= %s ORDER BY first_seq",
                (low, high),
            ).fetchall()
            chunks = chunk_codec.from_log([(s, m, log_codec.decode(b)) for s, m, b in blobs])
            self._ensure_partitions(conn, np.array([c.min_ts for c in chunks]))
            with conn.transaction():
                stored = conn.execute(
                    "SELECT value::bigint FROM meta WHERE key='indexed_seq' FOR UPDATE"
                ).fetchone()[0]
                if stored != low:  # another indexer moved it (one orphaned by a crash)
                    self.indexed_seq = max(self.indexed_seq, stored)
                    return 0
                with conn.cursor().copy(COPY) as copy:
                    for chunk in chunks:
                        copy.write_row(chunk.row())
                conn.execute("UPDATE meta SET value=%s WHERE key='indexed_seq'", (str(high),))
            self._tail.forget(high)
            self.indexed_seq = high
            self._compaction.wrote([c.user_id for c in chunks])
            return moved

    def compact(self) -> int:
        """One transaction per user; DELETE ... RETURNING reads and removes the parts at once."""
        with self._indexer_conn() as conn:
            rewritten = 0
            visits = self._compaction.visits(
                lambda: conn.execute(SMALL_BY_USER, (TARGET,)).fetchall(),
                lambda user: conn.execute(SMALL_CHUNKS, (user, TARGET)).fetchall(),
            )
            for user, groups in visits:
                with conn.transaction():
                    for group in groups:
                        parts = conn.execute(
                            "DELETE FROM history_chunks WHERE user_id = %s "
                            "AND first_seq = ANY(%s) RETURNING keys, records, details",
                            (user, group),
                        ).fetchall()
                        merged = chunk_codec.merge(user, [(k, r.encode(), v) for k, r, v in parts])
                        with conn.cursor().copy(COPY) as copy:
                            copy.write_row(merged.row())
                        rewritten += merged.count
            return rewritten

    def _ensure_partitions(self, conn: psycopg.Connection, timestamps: np.ndarray) -> None:
        for day in np.unique(np.floor(timestamps / DAY)).astype(np.int64).tolist():
            if day in self._days:
                continue
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_partition(day)} PARTITION OF history_chunks "
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
        while more such partitions remain. Events are removed a whole day at a time (a chunk
        never spans two days), so history keeps up to one day more than the retention asks."""
        expired = sorted(day for day in self._days if (day + 1) * DAY <= cutoff)
        if not expired:
            return 0, None
        with self._indexer_conn() as conn:
            name = _partition(expired[0])
            (events,) = conn.execute(f"SELECT coalesce(sum(count), 0) FROM {name}").fetchone()
            # CONCURRENTLY: readers and the chunker's COPY into other days never wait on it.
            conn.execute(f"ALTER TABLE history_chunks DETACH PARTITION {name} CONCURRENTLY")
            conn.execute(f"DROP TABLE {name}")
            self._days.discard(expired[0])
            return int(events), (expired[1] if len(expired) > 1 else None)

    # -- readers (any thread) -------------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection]:
        """A checked connection from the pool. After the server drops every connection (a
        restart, a failover) the pool's first wait can time out while it reconnects, so a
        timeout is tried once more; a store still unreachable is a `StoreUnavailable` (503)."""
        for attempt in (1, 2):
            try:
                conn = self._pool.getconn()
            except PoolTimeout as exc:
                if attempt == 2:
                    raise StoreUnavailable(f"no PostgreSQL connection for reads: {exc}") from exc
                continue
            try:
                yield conn
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"PostgreSQL read failed: {exc}") from exc
            finally:
                self._pool.putconn(conn)
            return

    def history(
        self, user_id: str, since: float, until: float, after: tuple[float, int], limit: int
    ) -> list[tuple[float, float, int, dict[str, object]]]:
        """A REPEATABLE READ snapshot on a pooled connection (see `Store.history`)."""
        known = max(self.indexed_seq, self._tail.high)  # batches up to here are chunked or held
        with self._reader() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                tail = snapshot_keys(
                    self._tail,
                    user_id,
                    known,
                    lambda: _indexed_seq(conn),
                    lambda seq: conn.execute(BATCH_ROWS, (seq,)),
                )
                refs = conn.execute(
                    "SELECT first_seq, min_ts, count FROM history_chunks "
                    "WHERE user_id = %s AND max_ts >= %s AND min_ts <= %s",
                    (user_id, max(since, after[0]), until),
                )

                def fetch(first_seqs: list[Hashable]) -> list[tuple[bytes, str | None]]:
                    return conn.execute(
                        "SELECT keys, details FROM history_chunks WHERE user_id = %s "
                        "AND first_seq = ANY(%s)",
                        (user_id, first_seqs),
                        binary=True,  # bytea as is, not hex text
                    ).fetchall()

                return page(refs, fetch, tail, since, until, after, limit)
            finally:
                conn.execute("COMMIT")

    def export_rows(
        self, since: float, until: float, users: Sequence[str] | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """A REPEATABLE READ snapshot on a connection of its own, read through server-side
        cursors (see `Store.export_rows`)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            indexed = _indexed_seq(conn)
            where, args = "max_ts >= %s AND min_ts <= %s", [since, until]
            if users is not None:
                where += " AND user_id = ANY(%s)"
                args.append(list(users))
            with conn.cursor(name="export_chunks") as cur:
                cur.itersize = 16
                cur.execute(f"SELECT user_id, records FROM history_chunks WHERE {where}", args)
                for user_id, records in cur:
                    yield user_id, records.encode()
            with conn.cursor(name="export_tail") as cur:
                cur.itersize = 16
                cur.execute(
                    "SELECT first_seq, model_id, events FROM batches WHERE first_seq > %s "
                    "ORDER BY first_seq",
                    (indexed,),
                )
                yield from chunk_codec.log_records(cur, users)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def model_versions(self) -> dict[int, str]:
        with self._reader() as conn:
            return dict(conn.execute("SELECT model_id, version FROM models").fetchall())

    def scan(
        self, after: int, until: int | None = None, batch: int = 65_536
    ) -> Iterator[tuple[int, LoggedBatch]]:
        """A REPEATABLE READ snapshot on a pooled connection (see `Store.scan`)."""
        with self._reader() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                indexed = _indexed_seq(conn)
                logged = conn.execute(
                    "SELECT first_seq, events FROM batches WHERE first_seq + count - 1 > %s "
                    "ORDER BY first_seq",
                    (after,),
                    binary=True,
                ).fetchall()
                (last,) = conn.execute(
                    "SELECT coalesce(max(first_seq + count - 1), 0) FROM batches"
                ).fetchone()
                found = scan_snapshot(
                    logged,
                    last,
                    indexed,
                    lambda high: conn.execute(
                        "SELECT user_id, records FROM history_chunks WHERE first_seq <= %s",
                        (high,),
                    ),
                    after,
                    until,
                    batch,
                )
            finally:
                conn.execute("COMMIT")
        yield from found

    def save_state(self, key: str, value: bytes) -> None:
        with self._reader() as conn:
            conn.execute(
                "INSERT INTO state VALUES (%s, %s, %s) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, time.time()),
            )

    def load_state(self, key: str) -> bytes | None:
        with self._reader() as conn:
            row = conn.execute("SELECT value FROM state WHERE key = %s", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def dead_letters(self, since: float, limit: int) -> list[tuple[int, float, int, str, str]]:
        with self._reader() as conn:
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


def _indexed_seq(conn: psycopg.Connection) -> int:
    """`indexed_seq` as of the snapshot of `conn`'s open transaction."""
    return int(conn.execute("SELECT value::bigint FROM meta WHERE key='indexed_seq'").fetchone()[0])


def _day_of(partition: str) -> int:
    digits = partition.removeprefix("history_chunks_d")
    return -int(digits[1:]) if digits.startswith("m") else int(digits)
