"""Store failures (locked database, disk full) answer 503 with nothing acknowledged, and the
service recovers by itself once the store works again."""

from __future__ import annotations

import resource
import sqlite3
import time

import httpx

from .conftest import Server, wait_until


def events(tag: str, n: int = 50) -> dict:
    now = time.time()
    return {
        "events": [
            {
                "user_id": f"{tag}-{i % 5}",
                "timestamp": now,
                "features": [0.1, 0.2, 0.3],
                "event_id": f"{tag}-{i}",
            }
            for i in range(n)
        ]
    }


def stored(client: httpx.Client) -> int:
    return client.get("/stats").json()["event_count"]


def assert_recovers(client: httpx.Client, tag: str) -> None:
    ok = wait_until(lambda: client.post("/ingest", json=events(tag)).status_code == 200, 20)
    assert ok, "the service recovers once the store works again"


def test_locked_log_gives_503_then_recovers(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_timeout=0.5)
    with server.client() as client:
        assert client.post("/ingest", json=events("before")).status_code == 200
        lock = sqlite3.connect(server.store_dir / "events.ingest.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the log
        try:
            r = client.post("/ingest", json=events("locked"))
            assert r.status_code == 503, r.text
            assert "locked" in r.json()["error"] and r.headers["retry-after"]
            assert stored(client) == 50
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert_recovers(client, "after")
        # The refused events were not claimed: their retry is processed, not a duplicate.
        r = client.post("/ingest", json=events("locked"))
        assert r.json()["processed"] == 50 and r.json()["duplicates"] == 0


def test_disk_full_gives_503_then_recovers(server: Server) -> None:
    pid = server.proc.pid
    unlimited = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    with server.client() as client:
        assert client.post("/ingest", json=events("before")).status_code == 200
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, unlimited[1]))  # no file may grow
        try:
            r = client.post("/ingest", json=events("full"))
            assert r.status_code == 503, r.text
            assert "write failed" in r.json()["error"]
            assert client.get("/users/full-0/median").json()["count"] == 0
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
        assert_recovers(client, "after")
        assert client.get("/users/after-0/median").json()["count"] == 10
        r = client.post("/ingest", json=events("full"))
        assert r.json()["processed"] == 50
        assert stored(client) == 150
