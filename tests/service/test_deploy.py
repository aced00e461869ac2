"""The Grafana dashboard and the example alerting rules only use metrics the service exports."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "streamscore.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"


def test_every_dashboard_metric_is_exported(server: Server) -> None:
    with server.client() as client:
        event = {"user_id": "d", "timestamp": time.time(), "features": [1, 2, 3]}
        client.post("/ingest", json={"events": [event, {"user_id": ""}]})
        client.get("/users/d/median")
        text = client.get("/metrics").text
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    queries = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    queries += re.findall(r"expr: (.+)", ALERTS.read_text())
    used = {name for q in queries for name in re.findall(r"\bstreamscore_[a-z_]+", q)}
    assert used, "the dashboard queries streamscore metrics"
    assert used <= exported, used - exported
