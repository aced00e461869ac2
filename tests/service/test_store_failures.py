"""Store failures (locked log, disk full, a read-only or restarted PostgreSQL) answer 503 with nothing acknowledged, and the
service recovers by itself once the store works again."""

from __future__ import annotations

import resource
import time

import httpx
import psycopg

from ..conftest import POSTGRES, Server, store_lock, wait_until


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


def test_locked_log_gives_503_then_recovers(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind=store_kind, store_timeout=0.5)
    with server.client() as client:
        assert client.post("/ingest", json=events("before")).status_code == 200
        with store_lock(server):
            r = client.post("/ingest", json=events("locked"))
            assert r.status_code == 503, r.text
            assert "lock" in r.json()["error"] and r.headers["retry-after"]
            assert stored(client) == 50
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


def test_postgres_read_only_and_dropped_connections_give_503_then_recover(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind="postgresql", store_timeout=0.5)
    database = str(server.options["store"]).rsplit("/", 1)[1]
    with server.client() as client, psycopg.connect(POSTGRES, autocommit=True) as admin:
        assert client.post("/ingest", json=events("before")).status_code == 200

        def cut_connections() -> None:  # as a server restart or failover would
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )

        admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
        cut_connections()
        try:
            for _ in range(2):  # the first may meet the cut connection, then read-only sessions
                r = client.post("/ingest", json=events("readonly"))
                assert r.status_code == 503, r.text
            assert "read-only" in r.json()["error"]
            assert client.get("/users/readonly-0/median").json()["count"] == 0
        finally:
            admin.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
        assert_recovers(client, "after")
        r = client.post("/ingest", json=events("readonly"))
        assert r.json()["processed"] == 50 and r.json()["duplicates"] == 0
        cut_connections()
        assert_recovers(client, "reconnected")
        assert stored(client) == 200
        # Reads go through a checked pool: none fails after the cut, and history catches up.
        assert wait_until(
            lambda: len(client.get("/users/reconnected-0/history").json()["history"]) == 10
        )
