"""The embedded store: two SQLite files, so acknowledging and indexing never wait on each other.

`events.ingest.db` is the durable log. Each group commit is one row of `batches` (its events in
the compact `log_codec` format), written and fsynced (synchronous=FULL) before any request of
the group is acknowledged: the ack path pays for one row, whatever the batch size. The log
keeps the batches of the current window (and the dedupe horizon), which is all a restart needs.

`events.db` is the history. An indexer thread expands logged batches into `history`, a WITHOUT
ROWID table clustered by (user_id, ts, seq), in large sorted chunks, off the ack path; history
trails acknowledgement by about `index_interval`.

Statements on the hot paths handle whole batches inside SQLite (`json_each` to expand, one
concatenated JSON text to read): one `sqlite3_step` per batch instead of one per row, which
matters because Python's sqlite3 drops and retakes the GIL at every step.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from streamscore.store import log_codec
from streamscore.store.base import RetentionCursor, SchemaTooNew, StoreUnavailable
from streamscore.store.log_codec import LoggedBatch

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

HISTORY_SCHEMA = """
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

MOVE = """
INSERT OR IGNORE INTO main.history (user_id, ts, seq, score, event_id, model_id, features)
SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6
FROM json_each(?1)
ORDER BY 1, 2, 3
"""

HISTORY = """
SELECT '[' || group_concat(printf('[%!.17g,%!.17g,%d]', ts, score, seq), ',') || ']' FROM (
    SELECT ts, score, seq FROM history
    WHERE user_id = ?1 AND ts >= ?2 AND ts <= ?3 AND (ts, seq) > (?4, ?5)
    ORDER BY ts, seq LIMIT ?6
)
"""


def _history_rows(first_seq: int, model_id: int, batch: LoggedBatch) -> bytes:
    """`[user_id, ts, seq, score, event_id, model_id, features]` rows, as JSON without brackets."""
    seqs = range(first_seq, first_seq + len(batch.user_ids))
    rows = zip(
        batch.user_ids,
        batch.timestamps.tolist(),
        seqs,
        batch.scores.tolist(),
        batch.event_ids,
        itertools.repeat(model_id),
        batch.features.tolist(),  # nested arrays: `->>` yields their JSON text
        strict=False,
    )
    return msgspec.json.encode(list(rows))[1:-1]


def _connect(path: Path, *, timeout: float, cache_mb: int = 16) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
    return conn


class SQLiteStore:
    """One writer thread appends, one indexer thread indexes, any thread reads history."""

    def __init__(self, path: Path, index_chunk: int = 250_000, timeout: float = 5.0) -> None:
        self.path = path
        self.log_path = path.with_suffix(".ingest" + (path.suffix or ".db"))
        self.index_chunk = index_chunk
        path.parent.mkdir(parents=True, exist_ok=True)
        self._main = _connect(path, timeout=timeout, cache_mb=128)
        self._check_schema(self._main)
        self._main.executescript(HISTORY_SCHEMA)
        self._log = _connect(self.log_path, timeout=timeout)
        self._log.executescript(LOG_SCHEMA)
        self._main.execute("ATTACH DATABASE ? AS ingest", (str(self.log_path),))
        self.indexed_seq = int(self._meta("indexed_seq"))
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()

    # -- startup -------------------------------------------------------------------------

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            return
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row and int(row[0]) > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} has schema version {row[0]}; this streamscore knows {SCHEMA_VERSION}"
            )

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

    # -- indexer thread ------------------------------------------------------------------

    def index_pending(self) -> int:
        """Expand the next logged batches (about `index_chunk` events) into `history`."""
        conn = self._main
        low = self.indexed_seq
        conn.execute("BEGIN")
        try:
            pending = conn.execute(
                "SELECT first_seq, count, model_id, events FROM ingest.batches "
                "WHERE first_seq > ? ORDER BY first_seq LIMIT 1000",
                (low,),
            )
            moved, high, rows = 0, low, []
            for first_seq, count, model_id, blob in pending:
                if moved and moved + count > self.index_chunk:
                    break
                moved += count
                high = first_seq + count - 1
                rows.append(_history_rows(first_seq, model_id, log_codec.decode(blob)))
            if not rows:
                conn.execute("COMMIT")
                return 0
            conn.execute(MOVE, (b"[" + b",".join(rows) + b"]",))
            conn.execute("UPDATE meta SET value=? WHERE key='indexed_seq'", (high,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.indexed_seq = high
        return moved

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
        """Delete history rows with `ts < cutoff` among the next `chunk` rows in key order after
        `after`; returns (deleted, the last key scanned or None when the scan wrapped around).

        History is clustered by user, so old rows are found by walking the key range in
        bounded steps: each step is one short transaction, and ingest never waits on it.
        """
        start: tuple = after or ("", float("-inf"), -1)  # type: ignore[assignment]
        conn = self._main
        row = conn.execute(
            "SELECT user_id, ts, seq FROM history WHERE (user_id, ts, seq) > (?, ?, ?) "
            "ORDER BY user_id, ts, seq LIMIT 1 OFFSET ?",
            (*start, chunk - 1),
        ).fetchone()
        end = tuple(row) if row else None
        conn.execute("BEGIN")
        try:
            deleted = conn.execute(
                "DELETE FROM history WHERE ts < ? AND (user_id, ts, seq) > (?, ?, ?)"
                + (" AND (user_id, ts, seq) <= (?, ?, ?)" if end else ""),
                (cutoff, *start, *(end or ())),
            ).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return deleted, end

    # -- readers (any thread) -------------------------------------------------------------

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
    ) -> list[list[float]]:
        """`[[ts, score, seq], ...]` for one user, ordered by (ts, seq), strictly after `after`."""
        conn = self._reader()
        (text,) = conn.execute(
            HISTORY, (user_id, since, until, after[0], after[1], limit)
        ).fetchone()
        return msgspec.json.decode(text) if text else []

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            conn.execute("PRAGMA query_only=1")
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
