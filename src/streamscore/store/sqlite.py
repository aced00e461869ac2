"""The embedded store: two SQLite files, so acknowledging and chunking never wait on each other.

`events.ingest.db` is the durable log. Each group commit is one row of `batches` (its events in
the compact `log_codec` format), written and fsynced (synchronous=FULL) before any request of
the group is acknowledged: the ack path pays for one row, whatever the batch size. The log
keeps the batches of the current window (and the dedupe horizon), which is all a restart needs.

`events.db` is the history: `history_chunks`, one row per (user, flush) in the columnar
`streamscore.history.chunks` format, written by the indexing process off the ack path in the same
transaction as `indexed_seq`, and merged by background compaction. A page reads the user's
chunks that overlap its range plus the logged batches past `indexed_seq` (the tail), so an
acknowledged event is readable at once.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path

import msgspec
import numpy as np

from streamscore.history import chunks as chunk_codec
from streamscore.history.compaction import TARGET, Compaction
from streamscore.history.pages import page
from streamscore.history.tail import Tail, snapshot_keys
from streamscore.store import log_codec
from streamscore.store.base import Cell, RetentionCursor, SchemaTooNew, StoreUnavailable
from streamscore.store.log_codec import LoggedBatch
from streamscore.store.scan import scan_snapshot

log = logging.getLogger(__name__)

# Version 1, the first release: one `history` row per event. Kept verbatim: a new store is
# created by replaying every migration, and the migration test builds a version-1 store.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS models (
    model_id   INTEGER PRIMARY KEY,
    version    TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    user_id  TEXT    NOT NULL,
    ts       REAL    NOT NULL,
    seq      INTEGER NOT NULL,
    score    REAL    NOT NULL,
    event_id TEXT,
    model_id INTEGER NOT NULL,
    features TEXT    NOT NULL,
    PRIMARY KEY (user_id, ts, seq)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS events AS
    SELECT h.user_id, h.ts AS timestamp, h.score, h.event_id, m.version AS model_version,
           h.features, h.seq
    FROM history AS h JOIN models AS m USING (model_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY,
    received_at REAL    NOT NULL,
    idx         INTEGER NOT NULL,    -- the event's index in its request
    error       TEXT    NOT NULL,
    raw         TEXT    NOT NULL     -- the event as received, cut at 4 KiB
);
INSERT OR IGNORE INTO meta VALUES ('schema_version', 1), ('indexed_seq', 0);
"""

# Version 2: columnar chunks per (user, flush); the per-event rows are converted (`_to_chunks`).
V2_SCHEMA = """
CREATE TABLE history_chunks (
    user_id   TEXT    NOT NULL,
    min_ts    REAL    NOT NULL,
    max_ts    REAL    NOT NULL,
    first_seq INTEGER NOT NULL,  -- the chunk's smallest seq
    count     INTEGER NOT NULL,
    keys      BLOB    NOT NULL,  -- streamscore.history.chunks keys: read by pages
    records   TEXT    NOT NULL   -- the events as JSON rows: read by the events view
);
CREATE INDEX history_chunks_by_user ON history_chunks (user_id, max_ts, min_ts, count);
DROP VIEW events;
CREATE VIEW events AS
    SELECT c.user_id, r.value->>0 AS timestamp, r.value->>1 AS score, r.value->>3 AS event_id,
           m.version AS model_version, r.value->>5 AS features, r.value->>2 AS seq
    FROM history_chunks AS c, json_each(c.records) AS r
    JOIN models AS m ON m.model_id = r.value->>4;
"""

# Version 3: named blobs of the service's own state (drift references, feature checkpoints, ...).
V3_SCHEMA = (
    "CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB NOT NULL, updated_at REAL NOT NULL)"
)

# Version 4: each chunk's event details (event type, attributes, variant), for history pages.
V4_SCHEMA = "ALTER TABLE history_chunks ADD COLUMN details TEXT"

SCHEMA_VERSION = 4

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    first_seq INTEGER PRIMARY KEY,  -- event i of the batch has seq first_seq + i
    count     INTEGER NOT NULL,
    model_id  INTEGER NOT NULL,
    events    BLOB    NOT NULL      -- the batch in streamscore.store.log_codec format
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value NOT NULL);
INSERT OR IGNORE INTO counters VALUES
    ('events', 0), ('late', 0), ('duplicates', 0), ('stream_time', -1e300);
"""

APPEND = "INSERT INTO batches (first_seq, count, model_id, events) VALUES (?, ?, ?, ?)"

COUNT = """
UPDATE counters SET value = CASE name
    WHEN 'events' THEN value + ?1
    WHEN 'late' THEN value + ?2
    WHEN 'duplicates' THEN value + ?3
    WHEN 'stream_time' THEN max(value, ?4)
END
"""

INSERT_CHUNK = (
    "INSERT INTO history_chunks "
    "(user_id, min_ts, max_ts, first_seq, count, keys, records, details) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

INSERT_CHUNK_V2 = (  # the version 2 migration's, before `details` existed
    "INSERT INTO history_chunks (user_id, min_ts, max_ts, first_seq, count, keys, records) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

COMPACT_USERS = 256  # users visited per compaction step
SMALL_BY_USER = "SELECT user_id, count(*) FROM history_chunks WHERE count < ? GROUP BY user_id"
SMALL_CHUNKS = (
    "SELECT rowid, count, min_ts FROM history_chunks "
    "WHERE user_id = ? AND count < ? ORDER BY min_ts"
)
BATCH_ROWS = (
    "SELECT first_seq, count, events FROM ingest.batches WHERE first_seq > ? ORDER BY first_seq"
)


def _to_chunks(conn: sqlite3.Connection) -> None:
    """Convert version-1 `history` rows into chunks of up to `TARGET` events per user and day."""
    rows = conn.execute(
        "SELECT user_id, ts, seq, score, event_id, model_id, features FROM history "
        "ORDER BY user_id, ts, seq"
    )
    pending: list[tuple] = []

    def flush() -> None:
        ts = np.array([r[1] for r in pending])
        seqs = np.array([r[2] for r in pending], dtype=np.int64)
        records = [(r[1], r[3], r[2], r[4], r[5], msgspec.Raw(r[6].encode())) for r in pending]
        chunk = chunk_codec.Chunk(
            user_id=pending[0][0],
            min_ts=float(ts[0]),
            max_ts=float(ts[-1]),
            first_seq=int(seqs.min()),
            count=len(pending),
            keys=chunk_codec.pack(ts, seqs, np.array([r[3] for r in pending], dtype=np.float32)),
            records=msgspec.json.encode(records),
        )
        conn.execute(INSERT_CHUNK_V2, chunk.row()[:7])
        pending.clear()

    while block := rows.fetchmany(65_536):
        for row in block:
            if pending and (
                row[0] != pending[0][0]
                or row[1] // chunk_codec.DAY != pending[0][1] // chunk_codec.DAY
                or len(pending) == TARGET
            ):
                flush()
            pending.append(row)
    if pending:
        flush()
    conn.execute("DROP TABLE history")


def _connect(path: Path, *, timeout: float, cache_mb: int = 16) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
    return conn


class SQLiteStore:
    """One writer thread appends, the indexing process chunks and compacts (on a store of its
    own over the same files), any thread reads."""

    def __init__(self, path: Path, index_chunk: int = 250_000, timeout: float = 5.0) -> None:
        self.path = path
        self.log_path = path.with_suffix(".ingest" + (path.suffix or ".db"))
        self.index_chunk = index_chunk
        self.timeout = timeout
        path.parent.mkdir(parents=True, exist_ok=True)
        self._main = _connect(path, timeout=timeout, cache_mb=128)
        self._migrate(self._main)
        self._log = _connect(self.log_path, timeout=timeout)
        self._log.executescript(LOG_SCHEMA)
        self._main.execute("ATTACH DATABASE ? AS ingest", (str(self.log_path),))
        self.indexed_seq = int(self._meta("indexed_seq"))
        self._tail = Tail()
        self._compaction = Compaction(COMPACT_USERS)
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._state: sqlite3.Connection | None = None  # opened on the first save_state
        self._state_lock = threading.Lock()

    # -- startup -------------------------------------------------------------------------

    def _migrate(self, conn: sqlite3.Connection) -> None:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        row = (
            has_meta
            and conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        )
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} has schema version {current}; this streamscore knows {SCHEMA_VERSION}"
            )
        if current < 1:
            conn.executescript(V1_SCHEMA)
        if current < 2:
            conn.execute("BEGIN")
            try:
                for statement in filter(str.strip, V2_SCHEMA.split(";")):
                    conn.execute(statement)
                _to_chunks(conn)
                conn.execute("UPDATE meta SET value=2 WHERE key='schema_version'")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("migrated the SQLite schema", extra={"version": 2})
        if current < 3:
            conn.execute(V3_SCHEMA)
            conn.execute("UPDATE meta SET value=3 WHERE key='schema_version'")
        if current < 4:
            conn.execute(V4_SCHEMA)
            conn.execute("UPDATE meta SET value=4 WHERE key='schema_version'")

    def _meta(self, key: str) -> str:
        return self._main.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]

    def register_model(self, version: str) -> int:
        self._main.execute(
            "INSERT OR IGNORE INTO models (version, created_at) VALUES (?, ?)",
            (version, time.time()),
        )
        return int(
            self._main.execute(
                "SELECT model_id FROM models WHERE version=?", (version,)
            ).fetchone()[0]
        )

    def counters(self) -> dict[str, float]:
        return {
            name: value for name, value in self._log.execute("SELECT name, value FROM counters")
        }

    def last_seq(self) -> int:
        row = self._log.execute(
            "SELECT first_seq + count - 1 FROM batches ORDER BY first_seq DESC LIMIT 1"
        ).fetchone()
        return max(int(row[0]) if row else 0, self.indexed_seq)

    def logged_batches(self) -> Iterator[LoggedBatch]:
        """Every logged batch, in arrival order."""
        for (blob,) in self._log.execute("SELECT events FROM batches ORDER BY first_seq"):
            yield log_codec.decode(blob)

    # -- writer thread -------------------------------------------------------------------

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
        """Log one batch (`log_codec` bytes) and fsync, or raise `StoreUnavailable`."""
        try:
            self._log.execute("BEGIN")
            try:
                if count:
                    self._log.execute(APPEND, (first_seq, count, model_id, events))
                self._log.execute(COUNT, (count, late, duplicates, stream_time))
                self._log.execute("COMMIT")
            except BaseException:
                self._log.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"event log write failed: {exc}") from exc

    def truncate_log(self, up_to_seq: int) -> None:
        """Forget logged batches ending at or below `up_to_seq` once they are indexed."""
        try:
            self._log.execute(
                "DELETE FROM batches WHERE first_seq + count - 1 <= ?",
                (min(up_to_seq, self.indexed_seq),),
            )
        except sqlite3.Error as exc:  # the next truncation retries; the log only grows meanwhile
            log.warning("event log truncation failed: %s", exc)

    def share_pending(self, cell: Cell) -> None:
        """Nothing to share: an append that returns is committed, one that raises is not."""

    def indexed_up_to(self, seq: int) -> None:
        self._tail.forget(seq)
        self.indexed_seq = max(self.indexed_seq, seq)

    # -- indexing process ----------------------------------------------------------------

    def index_pending(self) -> int:
        """Chunk the next logged batches (about `index_chunk` events) into `history_chunks`."""
        conn = self._main
        conn.execute("BEGIN")
        try:
            # From this snapshot: a second indexer's commit fails ours (SQLITE_BUSY_SNAPSHOT)
            # instead of chunking the same batches twice.
            low = self._indexed_seq(conn)
            pending = conn.execute(
                "SELECT first_seq, count, model_id, events FROM ingest.batches "
                "WHERE first_seq > ? ORDER BY first_seq LIMIT 1000",
                (low,),
            )
            taken = chunk_codec.take(pending, self.index_chunk)
            if not taken:
                conn.execute("COMMIT")
                return 0
            moved = sum(count for _, count, _, _ in taken)
            high = taken[-1][0] + taken[-1][1] - 1
            chunks = chunk_codec.from_log([(s, m, log_codec.decode(b)) for s, _, m, b in taken])
            conn.executemany(INSERT_CHUNK, [c.row() for c in chunks])
            conn.execute("UPDATE meta SET value=? WHERE key='indexed_seq'", (high,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._tail.forget(high)
        self.indexed_seq = high
        self._compaction.wrote([c.user_id for c in chunks])
        return moved

    def compact(self) -> int:
        """One transaction per user, on the chunker's connection."""
        conn = self._main
        rewritten = 0
        visits = self._compaction.visits(
            lambda: conn.execute(SMALL_BY_USER, (TARGET,)).fetchall(),
            lambda user: conn.execute(SMALL_CHUNKS, (user, TARGET)).fetchall(),
        )
        for user, groups in visits:
            conn.execute("BEGIN")
            try:
                for group in groups:
                    marks = ",".join("?" * len(group))
                    parts = conn.execute(
                        "SELECT keys, records, details FROM history_chunks "
                        f"WHERE rowid IN ({marks})",
                        group,
                    ).fetchall()
                    merged = chunk_codec.merge(user, [(k, r.encode(), v) for k, r, v in parts])
                    conn.execute(f"DELETE FROM history_chunks WHERE rowid IN ({marks})", group)
                    conn.execute(INSERT_CHUNK, merged.row())
                    rewritten += merged.count
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return rewritten

    def add_dead_letters(self, rows: list[tuple[float, int, str, str]], keep: int) -> None:
        """Store rejected events and keep only the newest `keep`."""
        conn = self._main
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT INTO dead_letters (received_at, idx, error, raw) VALUES (?, ?, ?, ?)", rows
            )
            conn.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
                (keep,),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def expire_history(
        self, cutoff: float, after: RetentionCursor | None, chunk: int
    ) -> tuple[int, RetentionCursor | None]:
        """Delete the chunks whose every event is older than `cutoff`, among the next `chunk`
        chunks in rowid order after `after`; returns (events deleted, the last rowid scanned or
        None when the scan wrapped around). A chunk holds one user's events of one day, so events
        go a chunk at a time: the store keeps up to a day more than the retention asks for."""
        start = after if isinstance(after, int) else 0
        conn = self._main
        row = conn.execute(
            "SELECT rowid FROM history_chunks WHERE rowid > ? ORDER BY rowid LIMIT 1 OFFSET ?",
            (start, chunk - 1),
        ).fetchone()
        end = int(row[0]) if row else None
        where = "max_ts < ? AND rowid > ?" + (" AND rowid <= ?" if end is not None else "")
        args = (cutoff, start) + ((end,) if end is not None else ())
        conn.execute("BEGIN")
        try:
            (deleted,) = conn.execute(
                f"SELECT total(count) FROM history_chunks WHERE {where}", args
            ).fetchone()
            conn.execute(f"DELETE FROM history_chunks WHERE {where}", args)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(deleted), end

    # -- readers (any thread) -------------------------------------------------------------

    def save_state(self, key: str, value: bytes) -> None:
        with self._state_lock:
            if self._state is None:
                self._state = _connect(self.path, timeout=self.timeout)
            self._state.execute(
                "INSERT OR REPLACE INTO state VALUES (?, ?, ?)", (key, value, time.time())
            )

    def load_state(self, key: str) -> bytes | None:
        row = self._reader().execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def dead_letters(self, since: float, limit: int) -> list[tuple[int, float, int, str, str]]:
        return (
            self._reader()
            .execute(
                "SELECT id, received_at, idx, error, raw FROM dead_letters "
                "WHERE received_at >= ? ORDER BY id LIMIT ?",
                (since, limit),
            )
            .fetchall()
        )

    def history(
        self, user_id: str, since: float, until: float, after: tuple[float, int], limit: int
    ) -> list[tuple[float, float, int, dict[str, object]]]:
        """One read transaction on the thread's reader connection (see `Store.history`)."""
        conn = self._reader()
        known = max(self.indexed_seq, self._tail.high)  # batches up to here are chunked or held
        conn.execute("BEGIN")
        try:
            tail = snapshot_keys(
                self._tail,
                user_id,
                known,
                lambda: self._indexed_seq(conn),
                lambda seq: conn.execute(BATCH_ROWS, (seq,)),
            )
            refs = conn.execute(
                "SELECT rowid, min_ts, count FROM history_chunks "
                "WHERE user_id = ? AND max_ts >= ? AND min_ts <= ?",
                (user_id, max(since, after[0]), until),
            )

            def fetch(rowids: list[Hashable]) -> list[tuple[bytes, str | None]]:
                marks = ",".join("?" * len(rowids))
                return conn.execute(
                    f"SELECT keys, details FROM history_chunks WHERE rowid IN ({marks})", rowids
                ).fetchall()

            return page(refs, fetch, tail, since, until, after, limit)
        finally:
            conn.execute("COMMIT")

    def export_rows(
        self, since: float, until: float, users: Sequence[str] | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """One read transaction on a connection of its own, so that a long export shares no
        reader's transaction (see `Store.export_rows`)."""
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.timeout)
        try:
            conn.execute("PRAGMA query_only=1")
            conn.execute("ATTACH DATABASE ? AS ingest", (str(self.log_path),))
            conn.execute("BEGIN")
            # The log's snapshot first: a batch truncated after it is in the chunks read next.
            conn.execute("SELECT 1 FROM ingest.batches LIMIT 1").fetchone()
            indexed = self._indexed_seq(conn)
            where, args = "max_ts >= ? AND min_ts <= ?", [since, until]
            if users is not None:
                where += " AND user_id IN (SELECT value FROM json_each(?))"
                args.append(msgspec.json.encode(list(users)).decode())
            rows = conn.execute(f"SELECT user_id, records FROM history_chunks WHERE {where}", args)
            for user_id, records in rows:
                yield user_id, records.encode()
            batches = conn.execute(
                "SELECT first_seq, model_id, events FROM ingest.batches WHERE first_seq > ? "
                "ORDER BY first_seq",
                (indexed,),
            )
            yield from chunk_codec.log_records(batches, users)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def model_versions(self) -> dict[int, str]:
        return dict(self._reader().execute("SELECT model_id, version FROM models").fetchall())

    def scan(
        self, after: int, until: int | None = None, batch: int = 65_536
    ) -> Iterator[tuple[int, LoggedBatch]]:
        """One read transaction on the thread's reader connection (see `Store.scan`)."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            indexed = self._indexed_seq(conn)
            logged = conn.execute(
                "SELECT first_seq, events FROM ingest.batches WHERE first_seq + count - 1 > ? "
                "ORDER BY first_seq",
                (after,),
            ).fetchall()
            (last,) = conn.execute(
                "SELECT coalesce(max(first_seq + count - 1), 0) FROM ingest.batches"
            ).fetchone()
            found = scan_snapshot(
                logged,
                last,
                indexed,
                lambda high: conn.execute(
                    "SELECT user_id, records FROM history_chunks WHERE first_seq <= ?", (high,)
                ),
                after,
                until,
                batch,
            )
        finally:
            conn.execute("COMMIT")
        yield from found

    @staticmethod
    def _indexed_seq(conn: sqlite3.Connection) -> int:
        """`indexed_seq` as of the snapshot of `conn`'s open transaction."""
        return int(conn.execute("SELECT value FROM meta WHERE key='indexed_seq'").fetchone()[0])

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            conn.execute("PRAGMA query_only=1")
            conn.execute("ATTACH DATABASE ? AS ingest", (str(self.log_path),))
            self._readers.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def close(self) -> None:
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._main.close()
        self._log.close()
        if self._state is not None:
            self._state.close()
