"""A store written by the previous release (schema version 1: one `history` row per event) is
migrated to chunks on open, and every event reads back identically through `history()` and the
`events` view. The version-1 rows are written here exactly as the previous release's indexer
wrote them (its statements, copied from release 1)."""

from __future__ import annotations

import itertools
import random
import sqlite3
from pathlib import Path

import msgspec
import numpy as np
import psycopg

from streamscore.store import log_codec
from streamscore.store.postgres import DAY, MIGRATIONS, PostgresStore
from streamscore.store.postgres import SCHEMA_VERSION as POSTGRES_VERSION
from streamscore.store.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from streamscore.store.sqlite import V1_SCHEMA, SQLiteStore
from tests.conftest import create_database, drop_database
from tests.unit.history.test_store_history import USERS, Feed, all_pages, view_rows

# -- release 1's indexer -------------------------------------------------------------------

V1_MOVE = """
INSERT OR IGNORE INTO main.history (user_id, ts, seq, score, event_id, model_id, features)
SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6
FROM json_each(?1)
ORDER BY 1, 2, 3
"""


def v1_sqlite_rows(first_seq: int, model_id: int, batch: log_codec.LoggedBatch) -> bytes:
    rows = zip(
        batch.user_ids,
        batch.timestamps.tolist(),
        range(first_seq, first_seq + len(batch.user_ids)),
        batch.scores.tolist(),
        batch.event_ids,
        itertools.repeat(model_id),
        batch.features.tolist(),
        strict=False,
    )
    return msgspec.json.encode(list(rows))[1:-1]


def v1_copy_rows(first_seq: int, model_id: int, batch: log_codec.LoggedBatch) -> str:
    floats = lambda a: msgspec.json.encode(a.tolist()).decode()[1:-1].split(",")  # noqa: E731
    features = msgspec.json.encode(batch.features.tolist()).decode()[2:-2].split("],[")
    events = [r"\N" if e is None else e for e in batch.event_ids]
    return "".join(
        f"{u}\t{t}\t{seq}\t{s}\t{e}\t{model_id}\t{{{f}}}\n"
        for u, t, seq, s, e, f in zip(
            batch.user_ids,
            floats(batch.timestamps),
            itertools.count(first_seq),
            floats(batch.scores.astype(np.float64)),
            events,
            features,
            strict=False,
        )
    )


def logged(feed: Feed, first: int, last: int) -> list[tuple[int, int, log_codec.LoggedBatch]]:
    """The feed's events first..last (seqs) as one logged batch."""
    rows = [e for e in feed.events if first <= e[2] <= last]
    batch = log_codec.LoggedBatch(
        [r[0] for r in rows],
        [r[4] for r in rows],
        np.array([r[1] for r in rows]),
        np.array([r[3] for r in rows], dtype=np.float32),
        np.array([r[5] for r in rows]),
    )
    return [(first, feed.model_id, batch)]


class V1Log:
    """Stands in for a store while the feed writes release 1's log (same `batches` format)."""

    def __init__(self, append, last_seq: int = 0) -> None:  # type: ignore[no-untyped-def]
        self.append, self._last = append, last_seq

    def register_model(self, version: str) -> int:
        return 1

    def last_seq(self) -> int:
        return self._last


def check(store, feed: Feed) -> None:  # type: ignore[no-untyped-def]
    for user in USERS:
        want = feed.oracle(user, 0.0, 1e6, (float("-inf"), -1))
        assert all_pages(store, user, 0.0, 1e6, 13) == want
        assert [tuple(r) for r in store.history(user, 3.0, 86_403.0, (4.0, 0), 5)] == feed.oracle(
            user, 3.0, 86_403.0, (4.0, 0)
        )[:5]
    while store.index_pending():  # the log's unindexed tail, then compaction, change nothing
        pass
    while store.compact():
        pass
    for user in USERS:
        assert all_pages(store, user, 0.0, 1e6, 13) == feed.oracle(
            user, 0.0, 1e6, (float("-inf"), -1)
        )
    assert view_rows(store) == sorted(
        (u, ts, seq, score, eid, "m1", f) for u, ts, seq, score, eid, f, *_ in feed.events
    )


def test_a_release_1_sqlite_store_reads_back_identically(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    main = sqlite3.connect(path, isolation_level=None)
    main.executescript(V1_SCHEMA)
    main.execute("INSERT INTO models (version, created_at) VALUES ('m1', 0)")
    log = sqlite3.connect(tmp_path / "events.ingest.db", isolation_level=None)
    log.executescript(
        "CREATE TABLE batches (first_seq INTEGER PRIMARY KEY, count INTEGER NOT NULL, "
        "model_id INTEGER NOT NULL, events BLOB NOT NULL);"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value NOT NULL);"
        "INSERT INTO counters VALUES ('events', 0), ('late', 0), ('duplicates', 0), "
        "('stream_time', -1e300);"
    )

    def append(first_seq, blob, model_id, *_, count):  # type: ignore[no-untyped-def]
        log.execute("INSERT INTO batches VALUES (?, ?, ?, ?)", (first_seq, count, model_id, blob))

    feed = Feed(V1Log(lambda *a: append(*a[:6], count=a[6])), random.Random(1), details=False)  # type: ignore[arg-type]
    for _ in range(40):
        feed.append(random.Random(len(feed.events)).randrange(1, 30))
    indexed = feed.batches[-3] - 1  # release 1 indexed all but the last batches
    rows = b",".join(v1_sqlite_rows(s, m, b) for s, m, b in logged(feed, 1, indexed))
    main.execute(V1_MOVE, (b"[" + rows + b"]",))
    main.execute("UPDATE meta SET value=? WHERE key='indexed_seq'", (indexed,))
    log.execute("DELETE FROM batches WHERE first_seq + count - 1 <= ?", (indexed - 200,))
    main.close()
    log.close()

    store = SQLiteStore(path)
    try:
        assert store._meta("schema_version") == SQLITE_VERSION
        check(store, feed)
    finally:
        store.close()


def test_a_release_1_postgresql_store_reads_back_identically() -> None:
    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (1)")
            conn.execute(MIGRATIONS[0])  # type: ignore[arg-type]
            conn.execute("INSERT INTO models (version, created_at) VALUES ('m1', 0)")

            def append(first_seq, blob, model_id, _l, _d, _t, count):  # type: ignore[no-untyped-def]
                conn.execute(
                    "INSERT INTO batches VALUES (%s, %s, %s, %s)",
                    (first_seq, count, model_id, blob),
                )

            feed = Feed(V1Log(append), random.Random(2), details=False)  # type: ignore[arg-type]
            for _ in range(40):
                feed.append(random.Random(len(feed.events)).randrange(1, 30))
            indexed = feed.batches[-3] - 1
            for day in {int(e[1] // DAY) for e in feed.events}:
                conn.execute(
                    f"CREATE TABLE history_d{day} PARTITION OF history "
                    f"FOR VALUES FROM ({day * DAY!r}) TO ({(day + 1) * DAY!r})"
                )
            copy_sql = (
                "COPY history (user_id, ts, seq, score, event_id, model_id, features) FROM STDIN"
            )
            with conn.cursor().copy(copy_sql) as copy:
                for s, m, b in logged(feed, 1, indexed):
                    copy.write(v1_copy_rows(s, m, b))
            conn.execute("UPDATE meta SET value=%s WHERE key='indexed_seq'", (str(indexed),))
        store = PostgresStore(url)
        try:
            assert (
                store._guard.execute("SELECT version FROM schema_version").fetchone()[0]
                == POSTGRES_VERSION
            )
            check(store, feed)
        finally:
            store.close()
    finally:
        drop_database(url)
