"""Issue 13, items 2 and 15 on a real service and PostgreSQL: a lost COMMIT reply, a lost
lock-holding session. Each test failed on the code before the fix (see the branch's report)."""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from streamscore.store import log_codec
from streamscore.store.base import StoreUnavailable
from streamscore.store.postgres import LOCK_KEY, PostgresStore

from ..conftest import Server, create_database, drop_database, wait_until

COMMIT_REPLY = b"C\x00\x00\x00\x0bCOMMIT\x00"  # CommandComplete "COMMIT", as the server sends it


class CommitCutter:
    """A TCP proxy to the local PostgreSQL that, once armed, cuts the first connection that
    logs a batch right when the server's COMMIT reply arrives: committed, never acknowledged."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cuts = 0
        self.refuse = threading.Event()  # while set, new connections are closed at once
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse.is_set():
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            inserted = threading.Event()
            threading.Thread(target=self._up, args=(client, server, inserted), daemon=True).start()
            threading.Thread(
                target=self._down, args=(server, client, inserted), daemon=True
            ).start()

    def _up(self, src: socket.socket, dst: socket.socket, inserted: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if b"INSERT INTO batches" in data:
                    inserted.set()
                dst.sendall(data)
        except OSError:
            pass
        _close(src, dst)

    def _down(self, src: socket.socket, dst: socket.socket, inserted: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if inserted.is_set() and self.armed.is_set() and COMMIT_REPLY in data:
                    self.armed.clear()
                    self.cuts += 1
                    break  # the server has committed; its reply is dropped with the connection
                dst.sendall(data)
        except OSError:
            pass
        _close(src, dst)

    def url(self, database_url: str) -> str:
        name = database_url.rsplit("/", 1)[1]
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}?sslmode=disable"

    def close(self) -> None:
        self.listener.close()


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


@pytest.fixture
def cutter() -> Iterator[CommitCutter]:
    proxy = CommitCutter()
    yield proxy
    proxy.close()


def event(user: str, event_id: str) -> dict:
    return {"user_id": user, "timestamp": time.time(), "features": [1, 2, 3], "event_id": event_id}


def logged(server: Server, event_id: str) -> int:
    """How many times `event_id` is in the store (history chunks, once indexed)."""
    return server.query(f"SELECT count(*) FROM events WHERE event_id = '{event_id}'")[0][0]


# -- 2: the reply to a successful COMMIT is lost --------------------------------------------------


def test_a_lost_commit_reply_is_reconciled_and_the_service_keeps_serving(
    server_factory, cutter: CommitCutter
) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind="postgresql", store_timeout=2.0)
    database = str(server.options["store"])
    server.stop()
    server.options["store"] = cutter.url(database)
    try:
        server.start()
        with server.client() as client:
            assert (
                client.post("/ingest", json={"events": [event("a", "before")]}).status_code == 200
            )
            cutter.armed.set()
            cut = client.post("/ingest", json={"events": [event("a", "cut")]})
            assert cutter.cuts == 1
            # Before: 503, then every later request 503 too (the next append reused the seq).
            assert cut.status_code == 200, cut.text
            retry = client.post("/ingest", json={"events": [event("a", "cut")]})
            assert retry.status_code == 200 and retry.json()["duplicates"] == 1, retry.text
            for i in range(3):
                later = client.post("/ingest", json={"events": [event("a", f"after{i}")]})
                assert later.status_code == 200 and later.json()["processed"] == 1, later.text
            assert client.get("/ready").status_code == 200
        ids = ["before", "cut", "after0", "after1", "after2"]
        assert wait_until(lambda: all(logged(server, i) == 1 for i in ids)), [
            (i, logged(server, i)) for i in ids
        ]
        assert server.query("SELECT value FROM counters WHERE name = 'events'")[0][0] == 5
    finally:
        server.options["store"] = database  # for the fixture, which drops it


# -- 15: the session holding the single-instance lock is lost ------------------------------------


def lock_holders(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objid = %s AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())",
            (LOCK_KEY & 0xFFFF_FFFF,),
        ).fetchall()
    return [pid for (pid,) in rows]


def terminate(url: str, pids: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_losing_the_lock_session_is_noticed_and_the_lock_taken_back(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind="postgresql", store_timeout=2.0)
    url = str(server.options["store"])
    holders = lock_holders(url)
    assert len(holders) == 1
    terminate(url, holders)
    with server.client() as client:
        # The first write after the loss may fail (its session is gone), none after it.
        client.post("/ingest", json={"events": [event("l", "x0")]})
        for i in range(1, 4):
            r = client.post("/ingest", json={"events": [event("l", f"x{i}")]})
            assert r.status_code == 200, r.text
    # Before: the lock was gone for good, and a second service could open the same database.
    assert len(lock_holders(url)) == 1
    with pytest.raises(StoreUnavailable, match="another streamscore"):
        PostgresStore(url, timeout=1.0)


def test_a_writer_whose_lock_was_taken_refuses_to_write(tmp_path: Path) -> None:
    url = create_database()
    store = PostgresStore(url, timeout=1.0)
    try:
        model = store.register_model("m")
        terminate(url, lock_holders(url))
        with psycopg.connect(url, autocommit=True) as thief:
            assert thief.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
            for _ in range(2):  # the lost session's write, then the retake that must fail
                with pytest.raises(StoreUnavailable):
                    store.append(1, b"", model, 0, 0, 0.0, 0)
        store.append(1, b"", model, 0, 0, 0.0, 0)  # the thief left: the lock is taken back
        assert len(lock_holders(url)) == 1
    finally:
        store.close()
        drop_database(url)


def batch(user: str, n: int) -> bytes:
    return log_codec.encode(
        [user] * n,
        [f"{user}{i}" for i in range(n)],
        np.full(n, 1_000_000.0),
        np.zeros(n, np.float32),
        np.zeros((n, 3)),
    )


def test_a_commit_that_cannot_be_confirmed_is_undone_before_the_next_append(
    cutter: CommitCutter,
) -> None:
    url = create_database()
    store = PostgresStore(cutter.url(url), timeout=1.0)
    # As in the service: chunking is done by the indexing process's own store, which learns of
    # the append in doubt through the shared cell.
    indexer = PostgresStore(url, timeout=1.0, indexer=True)
    pending = multiprocessing.get_context("spawn").Value("q", 0)
    store.share_pending(pending)
    indexer.share_pending(pending)
    try:
        model = store.register_model("m")
        store.append(1, batch("first", 1), model, 0, 0, 1_000_000.0, 1)
        assert indexer.index_pending() == 1
        cutter.armed.set()
        cutter.refuse.set()  # the reply is lost and the server cannot be reached to ask
        with pytest.raises(StoreUnavailable):
            store.append(2, batch("lost", 2), model, 0, 0, 1_000_000.0, 2)
        with psycopg.connect(url) as conn:  # it did land, while the caller was told it did not
            assert conn.execute("SELECT count(*) FROM batches").fetchone()[0] == 2
        cutter.refuse.clear()
        assert indexer.index_pending() == 0  # the chunker leaves an unsettled batch alone
        store.append(2, batch("kept", 3), model, 0, 0, 1_000_000.0, 3)  # the same seq, reused
        assert indexer.index_pending() == 3
        with psycopg.connect(url) as conn:
            users = conn.execute("SELECT user_id, count(*) FROM events GROUP BY 1 ORDER BY 1")
            (events,) = conn.execute("SELECT value FROM counters WHERE name='events'").fetchone()
            assert users.fetchall() == [("first", 1), ("kept", 3)] and events == 4
    finally:
        indexer.close()
        store.close()
        drop_database(url)
