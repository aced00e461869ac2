"""The batching policy at work in a real server: priorities, endpoints and metrics."""

from __future__ import annotations

import time

import httpx
import pytest

from ..conftest import Server, wait_until

# Run alone (scripts/test): it times how long events are held.
pytestmark = pytest.mark.serial


def test_high_priority_is_never_held_back_to_fill_a_batch(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(batching="fixed", batch_size=100_000, batch_max_wait=3)
    now = time.time()
    with server.client() as client:
        for priority, most in (("high", 1.0), ("normal", None)):
            event = {"user_id": "p", "timestamp": now, "features": [1, 2, 3]}
            started = time.monotonic()
            r = client.post("/ingest", json={"events": [{**event, "priority": priority}]})
            took = time.monotonic() - started
            assert r.status_code == 200
            if most:
                assert took < most, "a high-priority event is scored at once"
            else:
                assert took >= 2.9, "a fixed policy holds a normal event to fill its batch"
        r = client.post("/ingest", json={"events": [{**event, "priority": "urgent"}]})
        assert "Invalid enum value 'urgent'" in r.json()["errors"][0]["error"]


def test_batching_endpoints_and_metrics_on_a_real_server(server: Server) -> None:
    now = time.time()
    with server.client() as client:

        def ingest(i: int) -> httpx.Response:
            events = [
                {"user_id": f"b{j}", "timestamp": now, "features": [i, j, 1]}
                for j in range(i % 50 + 1)
            ]
            return client.post("/ingest", json={"events": events})

        for i in range(60):
            assert ingest(i).status_code == 200
        summary = client.get("/batching").json()
        assert summary["mode"] == "adaptive" and summary["fit"]["ready"] is True
        assert summary["batches"] >= 16 and summary["events"] == sum(i % 50 + 1 for i in range(60))
        assert summary["latency_budget_ms"] == 20.0 and summary["recent_cost_per_event"] > 0
        recent = client.get("/batches/recent", params={"limit": 3}).json()["batches"]
        assert len(recent) == 3 and recent[0]["id"] > recent[1]["id"]
        assert recent[0]["predicted_ms"] is not None and recent[0]["cost_per_event"] > 0
        assert client.get("/batches/recent", params={"limit": 0}).status_code == 422
        metrics = wait_until(lambda: client.get("/metrics").text)
        for name in ("batching_target_size", "batching_cost_per_event", "batching_fit_per_event"):
            assert f"streamscore_{name}" in metrics
