"""An A/B experiment's conversions over HTTP: `event_type` from ingest bodies converts users."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamscore.scoring.model import create_model

from ..conftest import Server


def test_purchases_convert_users_of_their_variant(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory()
    now = time.time()
    m2 = create_model(tmp_path / "m2.pt", seed=2).read_bytes()
    with server.client() as client:
        version = client.post(
            "/models", params={"name": "m2"}, content=m2,
            headers={"content-type": "application/octet-stream"},
        ).json()["version"]  # fmt: skip
        default = client.get("/models").json()["active"]
        body = {
            "name": "buy",
            "variants": [
                {"name": "control", "model": default, "weight": 0.5},
                {"name": "treatment", "model": version, "weight": 0.5},
            ],
            "outcome": {"event_type": "purchase"},
        }
        assert client.post("/experiments", json=body).status_code == 201
        users = [f"c{i}" for i in range(30)]
        variant = {
            u: client.get(f"/experiments/buy/assignments/{u}").json()["variant"] for u in users
        }
        for i, user in enumerate(users):
            events = [{"user_id": user, "timestamp": now + i, "features": [1, 2, 3],
                       "event_type": "view"}]  # fmt: skip
            if variant[user] == "treatment":  # only treatment users buy, after their view
                events.append({**events[0], "timestamp": now + i + 0.5, "event_type": "purchase"})
            assert client.post("/ingest", json={"events": events}).status_code == 200
        result = client.get("/experiments/buy").json()
        treated = sum(v == "treatment" for v in variant.values())
        got = {v["name"]: (v["users"], v["conversions"]) for v in result["variants"]}
        assert got == {"control": (30 - treated, 0), "treatment": (treated, treated)}
        assert result["difference"] == pytest.approx(1.0)
        metrics = client.get("/metrics").text
        line = 'streamscore_experiment_conversions_total{experiment="buy",variant="treatment"}'
        assert f"{line} {float(treated)}" in metrics
