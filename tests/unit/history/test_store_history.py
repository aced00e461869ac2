"""Both stores' `history()` equals a brute-force oracle over random interleavings of appends,
chunking, compaction and retention, page by page with cursors; the `events` view holds every
stored event."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamscore.history import compaction
from streamscore.store import log_codec
from streamscore.store.base import Store, StoreUnavailable
from streamscore.store.postgres import PostgresStore
from streamscore.store.sqlite import SQLiteStore
from tests.conftest import create_database, drop_database

USERS = ["u0", "u1", "ü2", "u'3"]
Event = tuple[str, float, int, float, str | None, list[float], dict]
# user, ts, seq, score, event id, features, details (the optional fields it has)


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[type]:
    """A function that (re)opens one store of the given kind; closes what it opened."""
    opened: list[Store] = []
    url = create_database() if request.param == "postgresql" else None

    def open_once() -> Store:
        """The server frees the closed store's session lock a moment after the disconnect."""
        deadline = time.monotonic() + 10
        while True:
            try:
                return PostgresStore(url)  # type: ignore[arg-type]
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def reopen() -> Store:
        for store in opened:
            store.close()
        store = open_once() if url else SQLiteStore(tmp_path / "events.db")
        opened[:] = [store]
        return store

    yield reopen  # type: ignore[misc]
    for store in opened:
        store.close()
    if url:
        drop_database(url)


class Feed:
    """Appends random batches to a store the way the pipeline does, remembering every event."""

    def __init__(self, store: Store, rng: random.Random, details: bool = True) -> None:
        """`details`: some events carry optional fields (a version-1 store had none)."""
        self.store, self.rng, self.with_details = store, rng, details
        self.model_id = store.register_model("m1")
        self.events: list[Event] = []
        self.batches: list[int] = []  # first seqs
        self.deleted: set[int] = set()  # seqs removed by retention
        self.next_seq = store.last_seq() + 1

    def append(self, n: int) -> None:
        rng = self.rng
        users = [rng.choice(USERS) for _ in range(n)]
        stamps = np.array(
            [rng.choice([86_400.0 * d + rng.randrange(5) for d in (0, 1, 2)]) for _ in users]
        )
        scores = np.array([rng.uniform(-1, 1) for _ in users], dtype=np.float32)
        ids = [rng.choice([None, f"e{self.next_seq + i}"]) for i in range(n)]
        features = np.array([[rng.random(), float(i)] for i in range(n)])

        # Some batches carry optional fields (event types, attributes, experiment variants),
        # each event its own or none.
        def some(values: list) -> list | None:  # type: ignore[type-arg]
            if not self.with_details or rng.random() < 0.6:
                return None
            return [rng.choice([None, *values]) for _ in users]

        types = some(["view", "purchase"])
        attributes = some([{"amount": 2.5}, {"device_type": "mobile", "new": True}])
        variants = some(["control", "treatment"])
        blob = log_codec.encode(
            users, ids, stamps, scores, features,
            event_types=types, attributes=attributes, variants=variants,
        )  # fmt: skip
        self.store.append(self.next_seq, blob, self.model_id, 0, 0, 0.0, n)
        self.batches.append(self.next_seq)
        for i in range(n):
            self.events.append(
                (
                    users[i],
                    float(stamps[i]),
                    self.next_seq + i,
                    float(scores[i]),
                    ids[i],
                    features[i].tolist(),
                    {
                        name: column[i]
                        for name, column in (
                            ("event_type", types),
                            ("attributes", attributes),
                            ("variant", variants),
                        )
                        if column is not None and column[i] is not None
                    },
                )
            )
        self.next_seq += n

    def expire(self, cutoff: float) -> None:
        """One whole retention sweep: chunked events older than `cutoff` (a day boundary) go."""
        after = None
        while True:
            _, after = self.store.expire_history(cutoff, after, 3)
            if after is None:
                break
        indexed = self.store.indexed_seq
        self.deleted |= {seq for _, ts, seq, *_ in self.events if ts < cutoff and seq <= indexed}

    def oracle(self, user: str, low: float, high: float, after: tuple[float, int]) -> list[tuple]:
        rows = sorted(
            (ts, seq, score, details)
            for u, ts, seq, score, _, _, details in self.events
            if u == user and low <= ts <= high and (ts, seq) > after and seq not in self.deleted
        )
        return [(ts, score, seq, details) for ts, seq, score, details in rows]


def all_pages(store: Store, user: str, low: float, high: float, limit: int) -> list[tuple]:
    rows: list[tuple] = []
    after = (float("-inf"), -1)
    while True:
        got = [tuple(r) for r in store.history(user, low, high, after, limit)]
        assert len(got) <= limit
        rows += got
        if len(got) < limit:
            return rows
        after = (got[-1][0], got[-1][2])


def test_history_equals_the_oracle_through_chunking_compaction_and_retention(
    open_store, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(compaction, "TARGET", 64)  # small enough to merge in a short test
    monkeypatch.setattr("streamscore.store.sqlite.TARGET", 64)
    monkeypatch.setattr("streamscore.store.postgres.TARGET", 64)
    rng = random.Random(11)
    store = open_store()
    store.index_chunk = 30
    feed = Feed(store, rng)
    for step in range(120):
        action = rng.random()
        if action < 0.55:
            feed.append(rng.randrange(1, 12))
        elif action < 0.8:
            store.index_pending()
        elif action < 0.92:
            store.compact()
        elif action < 0.97 and step > 60:
            feed.expire(rng.choice([86_400.0, 2 * 86_400.0]))
        else:
            store = open_store()  # a restart: chunks and log are read back
            store.index_chunk = 30
            feed.store = store
        user = rng.choice(USERS)
        low, high = sorted(rng.choice([0.0, 2.0, 86_400.0, 86_402.0, 3e5]) for _ in range(2))
        after = (rng.choice([-1.0, 1.0, 86_401.0]), rng.randrange(feed.next_seq + 1))
        limit = rng.randrange(0, 15)
        got = [tuple(r) for r in store.history(user, low, high, after, limit)]
        assert got == feed.oracle(user, low, high, after)[:limit]
        assert all_pages(store, user, 0.0, 1e6, rng.randrange(1, 9)) == feed.oracle(
            user, 0.0, 1e6, (float("-inf"), -1)
        )
    while store.index_pending():
        pass
    while store.compact():
        pass
    for user in USERS:
        assert all_pages(store, user, 0.0, 1e6, 7) == feed.oracle(
            user, 0.0, 1e6, (float("-inf"), -1)
        )


def indexing_store(store: Store) -> Store:
    """A store over the same data opened as the indexing process opens it."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path)
    assert isinstance(store, PostgresStore)
    return PostgresStore(store.url, indexer=True)


def test_history_equals_the_oracle_when_other_stores_do_the_chunking(open_store) -> None:  # type: ignore[no-untyped-def]
    """The service's arrangement: its store appends and serves pages while the indexing
    process's own store chunks and compacts, and the service learns the progress late. A second
    indexer that started from an older `indexed_seq` (one orphaned by a crash) must not chunk
    the same batches again."""
    rng = random.Random(17)
    store = open_store()
    indexer, stale = indexing_store(store), indexing_store(store)
    try:
        for chunker in (indexer, stale):
            chunker.index_chunk = 20
        feed = Feed(store, rng)
        for _ in range(100):
            action = rng.random()
            if action < 0.5:
                feed.append(rng.randrange(1, 12))
            elif action < 0.8:
                chunker = rng.choice([indexer, stale])
                chunker.index_pending()
                if rng.random() < 0.6:  # the progress report may arrive after later pages
                    store.indexed_up_to(chunker.indexed_seq)
            else:
                indexer.compact()
            user = rng.choice(USERS)
            assert all_pages(store, user, 0.0, 1e6, rng.randrange(1, 9)) == feed.oracle(
                user, 0.0, 1e6, (float("-inf"), -1)
            )
        while indexer.index_pending() or stale.index_pending():
            pass
        store.indexed_up_to(max(indexer.indexed_seq, stale.indexed_seq))
        for user in USERS:
            assert all_pages(store, user, 0.0, 1e6, 7) == feed.oracle(
                user, 0.0, 1e6, (float("-inf"), -1)
            )
        assert sorted(r[2] for r in view_rows(store)) == list(range(1, feed.next_seq))
    finally:
        indexer.close()
        stale.close()


def view_rows(store: Store) -> list[tuple]:
    sql = "SELECT user_id, timestamp, seq, score, event_id, model_version, features FROM events"
    if isinstance(store, SQLiteStore):
        import json
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            return sorted((*r[:6], json.loads(r[6])) for r in conn.execute(sql))
    with store._pool.connection() as conn:
        return sorted((*r[:6], list(r[6])) for r in conn.execute(sql))


def test_the_events_view_holds_every_chunked_event(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    feed = Feed(store, random.Random(3))
    for _ in range(30):
        feed.append(9)
        store.index_pending()
    while store.compact():
        pass
    want = sorted(
        (u, ts, seq, score, eid, "m1", f) for u, ts, seq, score, eid, f, *_ in feed.events
    )
    assert view_rows(store) == want


def test_an_acknowledged_event_is_readable_before_it_is_chunked(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    feed = Feed(store, random.Random(5))
    feed.append(50)
    store.index_pending()
    for n in (1, 2, 3):
        feed.append(n)  # appended: the tail, not a chunk
        for user in USERS:
            assert all_pages(store, user, 0.0, 1e6, 4) == feed.oracle(user, 0.0, 1e6, (-1.0, 0))
