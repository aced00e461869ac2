"""Streams sent to one node of a real cluster and read from another equal the brute-force
oracle: two nodes that forward reads to the owners, three that read from Redis."""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families

from ..cluster_harness import WINDOW, Cluster, check_against_oracle
from ..conftest import wait_until
from ..oracle import Oracle, reference_model, send_checked, splits, stream, wire_events

# Run alone (scripts/test): nodes' heartbeats and leases time out.
pytestmark = pytest.mark.serial

_examples = itertools.count()


@pytest.fixture(scope="module", params=[(2, "forwarded"), (3, "online")], ids=str)
def small_cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """Two nodes that forward reads to owners; three that read medians and features from
    Redis."""
    nodes, reads = request.param
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), nodes, online=reads == "online")
    try:
        yield cluster.start()
    finally:
        cluster.close()


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=stream, cuts=splits)
def test_sent_to_one_node_read_from_another_equals_the_oracle(
    small_cluster: Cluster, events: list[dict], cuts: list
) -> None:
    example = next(_examples)
    base = 1.9e9 + example * 1e6
    model = reference_model(small_cluster.model)
    oracle = Oracle(WINDOW, stream_time=base - 1e5)
    users = [f"{small_cluster.name}-ex{example}-user-{u}" for u in range(6)]
    for node in small_cluster.live():  # each saves its ingest counters, so `before` is settled
        small_cluster.stats(node)
    before = small_cluster.stats()["cluster"]
    wire = wire_events(events, users, base, f"{small_cluster.name}-ex{example}")
    writer, reader = small_cluster.nodes[0], small_cluster.nodes[-1]
    with writer.client() as client:
        send_checked(client, oracle, model, wire, cuts)
    small_cluster.wait_events(before["events"] + len(oracle.processed))
    with reader.client() as client:
        check_against_oracle(client, oracle, users)
    expected = {
        "events": before["events"] + len(oracle.processed),
        "ingested": before["ingested"] + len(oracle.processed),
        "duplicates": before["duplicates"] + oracle.duplicates,
        "late": before["late"] + oracle.late,
    }
    assert wait_until(
        lambda: {k: small_cluster.stats(reader)["cluster"][k] for k in expected} == expected
    ), (small_cluster.stats(reader)["cluster"], expected)


def test_a_retried_request_is_stored_once(small_cluster: Cluster) -> None:
    """Events with ids are stored once whatever node a retry reaches; events without ids once
    per `Idempotency-Key`, and, without a key, once per request (as on a single node)."""
    tag = uuid.uuid4().hex
    with_ids = [
        {"user_id": f"retry-{i % 3}", "timestamp": 2.5e9 + i, "features": [1.0, 2.0, float(i)],
         "event_id": f"retry-{tag}-{i}"}
        for i in range(30)
    ]  # fmt: skip
    without = [
        {"user_id": f"retry-{i % 4}", "timestamp": 2.5e9 + i, "features": [3.0, 2.0, float(i)]}
        for i in range(20)
    ]
    events = with_ids + without
    first, second = small_cluster.nodes[0], small_cluster.nodes[-1]
    before = small_cluster.stats()["cluster"]["events"]
    key = {"Idempotency-Key": f"request-{tag}"}
    with first.client() as a, second.client() as b:
        body = a.post("/ingest", json={"events": events}, headers=key).json()
        assert (body["processed"], body["duplicates"]) == (50, 0)
        again = b.post("/ingest", json={"events": events}, headers=key).json()
        assert (again["processed"], again["duplicates"]) == (0, 50)  # the same request again
        small_cluster.wait_events(before + 50)
        third = b.post("/ingest", json={"events": events}).json()  # no key: a new request
        assert (third["processed"], third["duplicates"]) == (20, 30)
    small_cluster.wait_events(before + 70)
    time.sleep(0.5)
    assert small_cluster.stats()["cluster"]["events"] == before + 70


def test_every_cluster_dashboard_metric_is_exported(small_cluster: Cluster) -> None:
    dashboard = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cluster.json"
    node = max(small_cluster.nodes, key=lambda n: len(small_cluster.stats(n)["partitions"]))
    text = httpx.get(node.url + "/metrics", timeout=10).text
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    panels = json.loads(dashboard.read_text())["panels"]
    used = {
        name
        for p in panels
        for t in p["targets"]
        for name in re.findall(r"\bstreamscore_[a-z_]+", t["expr"])
    }
    assert used and used <= exported, used - exported
    owned = [s for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == "streamscore_cluster_partition_owned"]  # fmt: skip
    assert (
        sorted(int(s.labels["partition"]) for s in owned) == small_cluster.stats(node)["partitions"]
    )
