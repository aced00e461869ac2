"""Readers and the history index can never wedge the service (issue 13, items 10 and 14)."""

from __future__ import annotations

import sqlite3
import time

import httpx
import numpy as np
import pytest

from streamscore.api.dashboard import MAX_STREAMS

from ..conftest import Server, wait_until

# Run alone (scripts/test): its checks wait on the server's own intervals.
pytestmark = pytest.mark.serial


def test_dashboard_streams_are_capped(server: Server) -> None:
    """Item 10: SSE streams never end by themselves, so their number is bounded."""
    clients = [httpx.Client(base_url=server.url, timeout=10) for _ in range(MAX_STREAMS + 1)]
    streams = []
    try:
        for client in clients[:MAX_STREAMS]:
            stream = client.stream("GET", "/dashboard/stream")
            response = stream.__enter__()
            assert response.status_code == 200
            streams.append(stream)
        refused = clients[-1].get("/dashboard/stream")
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert clients[-1].get("/health").status_code == 200
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()
    with server.client() as client:  # closed streams give their places back
        assert wait_until(
            lambda: client.get("/dashboard/snapshot").status_code == 200 and _stream_opens(client)
        )


def _stream_opens(client: httpx.Client) -> bool:
    with client.stream("GET", "/dashboard/stream") as response:
        return response.status_code == 200


def test_all_user_aggregates_are_computed_once_per_interval(server: Server) -> None:
    """Item 10: /stats for every reader shares one computation of every user's median a
    second, so many readers cost the windows lock nothing more."""
    now = time.time()
    events = [{"user_id": f"a{i}", "timestamp": now, "features": [i, 1, 2]} for i in range(500)]
    with server.client() as client:
        assert client.post("/ingest", json={"events": events}).status_code == 200
        computed = time.monotonic()
        first = client.get("/stats").json()["median_of_medians"]
        more = [{"user_id": f"b{i}", "timestamp": now, "features": [50, 9, 9]} for i in range(500)]
        assert client.post("/ingest", json={"events": more}).status_code == 200
        shared = client.get("/stats").json()
        if time.monotonic() - computed < 0.9:  # still within the interval: the shared value
            assert shared["median_of_medians"] == first
        assert shared["users_tracked"] == 1000  # counts are live, only the aggregate is shared
        time.sleep(1.1)
        assert client.get("/stats").json()["median_of_medians"] != first


def test_a_failing_history_index_gives_503_and_recovers(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Item 14: commits wait for a lagging index for `--index-wait` seconds at most, answer 503
    with Retry-After while it keeps failing, /ready says why, and all recovers by itself."""
    server: Server = server_factory(max_index_lag=500, index_wait=1.0, store_timeout=0.5)
    rng = np.random.default_rng(0)
    now = time.time()

    def body(n: int, tag: str) -> dict:
        rows = rng.random((n, 3)).tolist()
        return {
            "events": [
                {"user_id": f"h{i % 20}", "timestamp": now, "features": r, "event_id": f"{tag}-{i}"}
                for i, r in enumerate(rows)
            ]
        }

    history = sqlite3.connect(server.store_dir / "events.db", isolation_level=None, timeout=5)
    history.execute("BEGIN IMMEDIATE")  # the chunker cannot write history: the index stalls
    released = False
    try:
        with server.client() as client:
            assert client.post("/ingest", json=body(600, "a")).status_code == 200  # lag > 500
            refused = client.post("/ingest", json=body(10, "b"))
            assert refused.status_code == 503, refused.text
            assert "Retry-After" in refused.headers and "history" in refused.json()["error"]
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert "history index is behind" in ready.json()["problems"]
            history.execute("ROLLBACK")
            released = True
            assert wait_until(lambda: client.get("/ready").status_code == 200, 20)
            again = client.post("/ingest", json=body(10, "b"))  # the refused request, retried
            assert again.status_code == 200 and again.json()["processed"] == 10
    finally:
        if not released:
            history.execute("ROLLBACK")
        history.close()
