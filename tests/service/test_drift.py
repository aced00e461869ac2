"""Drift over HTTP: a shift in one input is flagged (and only that one) on /drift and /metrics;
the reference re-pins to recent events; both need their scopes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ..conftest import Server, wait_until


def send(client, rng: np.random.Generator, n: int, shift: float, start: int) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    for first in range(0, n, 500):
        features = rng.normal(size=(500, 3))
        features[:, 1] += shift
        events = [
            {"user_id": f"d{(start + first + i) % 300}", "timestamp": now, "features": row}
            for i, row in enumerate(features.tolist())
        ]
        r = client.post("/ingest", json={"events": events})
        assert r.status_code == 200 and r.json()["processed"] == 500


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_a_shifted_input_is_flagged_alone(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(
        store_kind=store_kind, drift_reference_events=2000, drift_window=2000
    )
    rng = np.random.default_rng(3)
    with server.client() as client:
        send(client, rng, 4000, 0.0, 0)
        values = {v["name"]: v for v in client.get("/drift").json()["values"]}
        version = client.get("/stats").json()["model_version"]
        assert sorted(values) == ["features[0]", "features[1]", "features[2]", f"score@{version}"]
        assert not any(v["drifted"] for v in values.values())
        assert values["features[1]"]["reference"]["events"] == 2000
        send(client, rng, 5000, 0.5, 4000)  # half a standard deviation
        report = wait_until(lambda: client.get("/drift").json())
        drifted = {v["name"] for v in report["values"] if v["drifted"]}
        assert "features[1]" in drifted and not drifted & {"features[0]", "features[2]"}
        assert any(a["name"] == "features[1]" and a["state"] == "drifted" for a in report["alerts"])
        metrics = client.get("/metrics").text
        assert 'streamscore_drift_active{value="features[1]"} 1.0' in metrics
        assert 'streamscore_drift_psi{value="features[0]"}' in metrics
        r = client.post("/drift/reference", json={"source": "recent"})
        assert r.status_code == 200 and r.json() == {"reference_events": 2000}
        send(client, rng, 3000, 0.5, 9000)
        values = {v["name"]: v for v in client.get("/drift").json()["values"]}
        assert not values["features[1]"]["drifted"], "the shifted data is the reference now"


def test_drift_endpoints_need_their_scopes(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(api_keys="reader:read,ops:admin", auth_reads="true")
    with server.client() as client:
        assert client.get("/drift").status_code == 401
        assert client.get("/drift", headers={"authorization": "Bearer reader"}).status_code == 200
        denied = client.post("/drift/reference", headers={"authorization": "Bearer reader"})
        assert denied.status_code == 403
        none_yet = client.post("/drift/reference", headers={"authorization": "Bearer ops"})
        assert none_yet.status_code == 400 and "no events" in none_yet.json()["error"]


def test_the_simulator_drifts_an_input_on_request(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(drift_reference_events=2000, drift_window=2000)
    run = {
        "rps": 4000,
        "duration_s": 4,
        "users": 50,
        "drift": {"features": [2], "after_s": 1.5, "shift": 0.5},
    }
    with server.client() as client:
        assert client.post("/simulator/start", json=run).status_code == 200
        done = wait_until(lambda: not client.get("/simulator/status").json()["running"], 30)
        assert done
        report = client.get("/drift").json()
        drifted = {v["name"] for v in report["values"] if v["drifted"]}
        assert drifted & {"features[0]", "features[1]", "features[2]"} == {"features[2]"}
        bad = client.post("/simulator/start", json={**run, "drift": {"features": [3]}})
        assert bad.status_code == 400


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_references_survive_a_restart(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(
        store_kind=store_kind, drift_reference_events=1000, drift_window=1000
    )
    rng = np.random.default_rng(5)
    with server.client() as client:
        send(client, rng, 1500, 0.0, 0)
        before = {v["name"]: v["reference"] for v in client.get("/drift").json()["values"]}
    server.restart()
    with server.client() as client:
        after = {v["name"]: v["reference"] for v in client.get("/drift").json()["values"]}
        assert after == before and after["features[0]"]["events"] == 1000
        send(client, rng, 3000, 0.5, 1500)  # compared with the restored reference at once
        drifted = {v["name"] for v in client.get("/drift").json()["values"] if v["drifted"]}
        assert "features[1]" in drifted


class ReadsOneComputedFeature(torch.nn.Module):
    """Three raw inputs, then `events_1h` (the sidecar's `raw: true` order)."""

    def __init__(self) -> None:
        super().__init__()
        self.n_features = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] + 0.01 * x[:, 3]


def test_a_computed_feature_the_model_reads_is_monitored(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "reader.pt"
    torch.jit.script(ReadsOneComputedFeature()).save(str(model))
    sidecar = {"features": ["events_1h"], "raw": True}
    model.with_suffix(".features.json").write_text(json.dumps(sidecar))
    server: Server = server_factory(model=model, drift_reference_events=2000, drift_window=2000)
    rng = np.random.default_rng(5)
    with server.client() as client:
        send(client, rng, 3000, 0.0, 0)  # 300 users, 10 events each within the hour
        values = {v["name"]: v for v in client.get("/drift").json()["values"]}
        version = client.get("/stats").json()["model_version"]
        names = ["features[0]", "features[1]", "features[2]", "events_1h", f"score@{version}"]
        assert sorted(values) == sorted(names)
        assert values["events_1h"]["reference"]["events"] == 2000
        assert not any(v["drifted"] for v in values.values())
        # The same raw inputs, but from 30 users: each user's count in the hour climbs far
        # beyond the reference's 1..10, so only the computed input (and the score) drift.
        now = time.time()
        for _ in range(8):  # 4,000 events
            events = [
                {"user_id": f"busy{i % 30}", "timestamp": now, "features": row}
                for i, row in enumerate(rng.normal(size=(500, 3)).tolist())
            ]
            assert client.post("/ingest", json={"events": events}).json()["processed"] == 500
        report = client.get("/drift").json()
    drifted = {v["name"] for v in report["values"] if v["drifted"]}
    assert "events_1h" in drifted and not drifted & {"features[0]", "features[1]", "features[2]"}
