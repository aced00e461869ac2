"""/metrics (Prometheus), /health and /ready on a real server."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Server, store_lock, wait_until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_happened(server: Server) -> None:
    now = time.time()
    good = {"user_id": "m", "timestamp": now, "features": [1, 2, 3], "event_id": "a"}
    old = {"user_id": "m", "timestamp": 5, "features": [1, 2, 3]}
    with server.client() as client:
        client.post("/ingest", json={"events": [good, good, old, {"user_id": "m"}]})
        client.get("/users/m/median")
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        got = samples(r.text)
    assert got[("streamscore_events_ingested_total", ())] == 1
    assert got[("streamscore_events_duplicate_total", ())] == 1
    assert got[("streamscore_events_rejected_total", (("reason", "timestamp_too_old"),))] == 1
    assert got[("streamscore_events_rejected_total", (("reason", "invalid_event"),))] == 1
    assert got[("streamscore_batch_size_events_count", ())] >= 1
    assert got[("streamscore_inference_seconds_count", ())] >= 1
    assert got[("streamscore_store_commit_seconds_count", ())] >= 1
    ingest = (("endpoint", "/ingest"), ("status", "200"))
    assert got[("streamscore_request_duration_seconds_count", ingest)] == 1
    median = (("endpoint", "/users/{user_id}/median"), ("status", "200"))
    assert got[("streamscore_request_duration_seconds_count", median)] == 1
    assert got[("streamscore_window_users", ())] == 1
    assert got[("streamscore_window_events", ())] == 1
    model = [k for k in got if k[0] == "streamscore_model_info"]
    assert model and dict(model[0][1])["version"].startswith("default@")


def test_ready_follows_the_store(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind=store_kind, store_timeout=0.3)
    event = {"user_id": "r", "timestamp": time.time(), "features": [1, 2, 3]}
    with server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ready", "problems": []}
        with store_lock(server):
            assert client.post("/ingest", json={"events": [event]}).status_code == 503
            r = client.get("/ready")
            assert r.status_code == 503
            assert r.json()["problems"] == ["store: the last write failed"]
            assert client.get("/health").status_code == 200  # alive all the same
        assert wait_until(
            lambda: client.post("/ingest", json={"events": [event]}).status_code == 200
        )
        assert client.get("/ready").status_code == 200
