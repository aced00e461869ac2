"""A cluster of real `streamscore serve --cluster` processes on the local NATS, PostgreSQL and
Redis: streams sent to one node and read from another equal the brute-force oracle, also when
nodes are killed (-9) and join under load, and when NATS restarts.

Every cluster here gets its own name (stream, bucket, schema, Redis keys) and database, and is
deleted afterwards. Heartbeats are fast (0.5 s, dead after 2 s) so take-overs fit in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streamscore.scoring.model import create_model

from ..conftest import Server, create_database, drop_database, post_events, wait_until
from ..oracle import Oracle, reference_model, reference_scores
from ..unit.cluster.conftest import PrivateNats

NATS_URL = os.environ.get("STREAMSCORE_TEST_NATS", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("STREAMSCORE_TEST_REDIS", "redis://127.0.0.1:6379/0")
WINDOW = 60.0
PARTITIONS = 8
_examples = itertools.count()


class Cluster:
    """N node processes sharing a bus, a database and (optionally) Redis."""

    def __init__(
        self, root: Path, nodes: int, nats_url: str = NATS_URL, online: bool = False
    ) -> None:
        self.root = root
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.database = create_database()
        self.model = create_model(root / "demo_model.pt")
        self.nats_url = nats_url
        self.online = online
        self.nodes = [self._node(i) for i in range(nodes)]

    def _node(self, i: int) -> Server:
        directory = self.root / f"node{i}"
        directory.mkdir(exist_ok=True)
        options: dict[str, object] = {
            "store": self.database,
            "model": self.model,
            "cluster": self.nats_url,
            "node_id": f"n{i}",
            "cluster_name": self.name,
            "partitions": PARTITIONS,
            "window": WINDOW,
            "max_future_skew": 1e12,
            "heartbeat_interval": 0.5,
            "dead_after": 2.0,
            "cluster_ack_wait": 2.0,
        }
        if self.online:
            options["online_store"] = REDIS_URL
        return Server(directory, **options)

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        self.wait_owned()
        return self

    def add(self) -> Server:
        node = self._node(len(self.nodes))
        self.nodes.append(node)
        return node.start()

    def stats(self, node: Server | None = None) -> dict:
        return httpx.get((node or self.live()[0]).url + "/stats", timeout=10).json()

    def live(self) -> list[Server]:
        return [n for n in self.nodes if n.proc is not None]

    def wait_owned(self, timeout: float = 30.0) -> float:
        """Seconds until every partition is owned by a live node, as every live node sees it."""
        start = time.monotonic()
        live = {f"n{i}" for i, n in enumerate(self.nodes) if n.proc is not None}

        def settled() -> bool:
            owned: list[int] = []
            for node in self.live():
                body = self.stats(node)
                if not set(body["cluster"]["owners"]) <= live:
                    return False
                owned += body["partitions"]
            return sorted(owned) == list(range(PARTITIONS))

        assert wait_until(settled, timeout=timeout, interval=0.05), "partitions not settled"
        return time.monotonic() - start

    def wait_events(self, events: int, timeout: float = 60.0) -> None:
        """Until the owners have stored `events` events in all (the cluster's counters)."""
        assert wait_until(lambda: self.stats()["cluster"]["events"] >= events, timeout=timeout), (
            f"cluster holds {self.stats()['cluster']['events']} of {events} events"
        )

    def close(self) -> None:
        for node in self.nodes:
            node.drop()
        drop_database(self.database)

        async def delete() -> None:
            nc = await nats.connect(self.nats_url, connect_timeout=2)
            js = nc.jetstream()
            for remove in (js.delete_stream(self.name), js.delete_key_value(f"{self.name}-meta")):
                with contextlib.suppress(nats.errors.Error):
                    await remove
            await nc.close()

        with contextlib.suppress(OSError, nats.errors.Error):  # a private NATS gone already
            asyncio.run(delete())
        if self.online:
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{self.name}:*"))
            if keys:
                client.delete(*keys)


@pytest.fixture(scope="module", params=["forwarded", "online"])
def two_nodes(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), 2, online=request.param == "online")
    try:
        yield cluster.start()
    finally:
        cluster.close()


def history(client: httpx.Client, user: str, page: int) -> list[tuple[float, float]]:
    rows: list[tuple[float, float]] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": page}
        if cursor:
            params["cursor"] = cursor
        response = client.get(f"/users/{user}/history", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        rows += [(p["timestamp"], p["score"]) for p in body["history"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


def medians_match(client: httpx.Client, oracle: Oracle, users: list[str]) -> bool:
    for user in users:
        response = client.get(f"/users/{user}/median")
        if response.status_code != 200:
            return False
        body = response.json()
        expected, count = oracle.median(user)
        if body["count"] != count or body["window_end"] != oracle.stream_time:
            return False
        if expected is None:
            if body["median"] is not None:
                return False
        elif not math.isclose(body["median"], expected, rel_tol=1e-5, abs_tol=1e-6):
            return False
    return True


def check_against_oracle(client: httpx.Client, oracle: Oracle, users: list[str]) -> None:
    """Medians (once the owners have caught up with stream time), features and history."""
    assert wait_until(lambda: medians_match(client, oracle, users), timeout=20), [
        (client.get(f"/users/{u}/median").json(), oracle.median(u)) for u in users
    ]
    for user in users:
        response = client.get(
            f"/users/{user}/features", params={"names": "events_1h,score_median_5m"}
        )
        assert response.status_code == 200, response.text
        f = response.json()["features"]
        low, high = f["events_1h"]["window_start"], f["events_1h"]["window_end"]
        assert high == oracle.stream_time
        assert f["events_1h"]["value"] == sum(
            1 for u, t, _ in oracle.processed if u == user and low <= t <= high
        )
        m = f["score_median_5m"]
        scores = [
            s
            for u, t, s in oracle.processed
            if u == user and m["window_start"] <= t <= m["window_end"]
        ]
        if scores:
            expected = float(np.median(np.array(scores, dtype=np.float32).astype(np.float64)))
            assert m["value"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
        else:
            assert m["value"] is None
        want = oracle.history(user)
        got = history(client, user, 7)
        assert [t for t, _ in got] == [t for t, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-5, abs=1e-6)


event = st.fixed_dictionaries(
    {
        "user": st.integers(0, 5),
        "offset": st.integers(-200, 120).map(float) | st.floats(-5, 5).map(lambda x: round(x, 3)),
        "features": st.lists(st.floats(-10, 10, width=32), min_size=3, max_size=3),
        "event_id": st.none() | st.integers(0, 15),
    }
)
stream = st.lists(event, min_size=1, max_size=120)
splits = st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=8)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=stream, cuts=splits)
def test_sent_to_one_node_read_from_another_equals_the_oracle(
    two_nodes: Cluster, events: list[dict], cuts: list
) -> None:
    example = next(_examples)
    base = 1.9e9 + example * 1e6
    model = reference_model(two_nodes.model)
    oracle = Oracle(WINDOW, stream_time=base - 1e5)
    users = [f"{two_nodes.name}-ex{example}-user-{u}" for u in range(6)]
    before = two_nodes.stats()["cluster"]
    wire = []
    for e in events:
        item = {"user_id": users[e["user"]], "timestamp": base + e["offset"]}
        item["features"] = e["features"]
        if e["event_id"] is not None:
            item["event_id"] = f"ex{example}-id-{e['event_id']}"
        wire.append(item)
    writer, reader = two_nodes.nodes
    with writer.client() as client:
        start = 0
        for size, ndjson in itertools.chain(cuts, itertools.repeat((40, False))):
            chunk = wire[start : start + size]
            if not chunk:
                break
            start += size
            scores = reference_scores(model, [e["features"] for e in chunk])
            processed, duplicates, late = oracle.ingest(chunk, scores)
            body = post_events(client, chunk, ndjson)
            assert body["rejected"] == 0
            assert (body["processed"], body["duplicates"], body["late"]) == (
                processed,
                duplicates,
                late,
            )
    two_nodes.wait_events(before["events"] + len(oracle.processed))
    with reader.client() as client:
        check_against_oracle(client, oracle, users)
    expected = {
        "events": before["events"] + len(oracle.processed),
        "ingested": before["ingested"] + len(oracle.processed),
        "duplicates": before["duplicates"] + oracle.duplicates,
        "late": before["late"] + oracle.late,
    }
    assert wait_until(
        lambda: {k: two_nodes.stats(reader)["cluster"][k] for k in expected} == expected
    ), (two_nodes.stats(reader)["cluster"], expected)


def test_a_retried_request_is_stored_once(two_nodes: Cluster) -> None:
    events = [
        {"user_id": f"retry-{i % 3}", "timestamp": 2.5e9 + i, "features": [1.0, 2.0, float(i)],
         "event_id": f"retry-{uuid.uuid4().hex}"}
        for i in range(50)
    ]  # fmt: skip
    first, second = two_nodes.nodes
    before = two_nodes.stats()["cluster"]["events"]
    with first.client() as a, second.client() as b:
        assert post_events(a, events, False)["processed"] == 50
        again = post_events(b, events, False)  # the same request to another node
        assert again["processed"] + again["duplicates"] == 50
    two_nodes.wait_events(before + 50)
    time.sleep(0.5)
    assert two_nodes.stats()["cluster"]["events"] == before + 50


class RetryingSender:
    """A sequential client that sends each request to a random live node until one answers
    200, as a client behind a load balancer with retries would; the oracle sees each request
    once, in the order of the 200s."""

    def __init__(self, cluster: Cluster, oracle: Oracle, model_path: Path, prefix: str) -> None:
        self.cluster = cluster
        self.oracle = oracle
        self.model = reference_model(model_path)
        self.prefix = prefix
        self.sent = 0
        self.retries = 0
        self.refused = 0  # 503 answers
        self.stop = False
        self.rng = random.Random(7)

    def request(self, k: int) -> list[dict]:
        base = 3.0e9 + k
        return [
            {
                "user_id": f"{self.prefix}-u{self.rng.randrange(12)}",
                "timestamp": base - self.rng.choice([0.0, 0.5, 3.0, 90.0]),
                "features": [self.rng.uniform(-5, 5) for _ in range(3)],
                "event_id": f"{self.prefix}-{k}-{i}",
            }
            for i in range(20)
        ]

    def run(self) -> None:
        k = 0
        while not self.stop:
            events = self.request(k)
            while True:
                live = self.cluster.live()
                node = self.rng.choice(live)
                try:
                    response = httpx.post(node.url + "/ingest", json={"events": events}, timeout=10)
                    if response.status_code == 200:
                        break
                    self.refused += response.status_code == 503
                except httpx.HTTPError:
                    pass
                self.retries += 1
                time.sleep(0.05)
            self.oracle.ingest(
                events, reference_scores(self.model, [e["features"] for e in events])
            )
            self.sent += len(events)
            k += 1


def test_nodes_killed_and_joining_under_load_lose_nothing(
    tmp_path: Path,
) -> None:
    """kill -9 a node three times under load (it rejoins each time): every acknowledged event is
    stored exactly once, survivors take its partitions within the bound, and at rest medians,
    features and history equal the oracle."""

    cluster = Cluster(tmp_path, 3)
    try:
        cluster.start()
        oracle = Oracle(WINDOW)
        sender = RetryingSender(cluster, oracle, cluster.model, cluster.name)
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        takeovers = []
        rng = random.Random(3)
        for _ in range(3):
            time.sleep(2.0)
            victim = rng.choice(cluster.live())
            victim.kill()
            takeovers.append(cluster.wait_owned(timeout=30))
            time.sleep(1.0)
            victim.start()  # joins again, under load
            cluster.wait_owned(timeout=30)
        time.sleep(1.0)
        sender.stop = True
        thread.join(60)
        assert sender.sent > 0
        cluster.wait_events(len(oracle.processed))
        assert cluster.stats()["cluster"]["events"] == len(oracle.processed)  # exactly once
        users = sorted(oracle.users())
        with cluster.live()[0].client() as client:
            check_against_oracle(client, oracle, users)
        # take-over after a kill: dead_after (2 s) + two heartbeat rounds, far inside 15 s
        assert max(takeovers) < 15, takeovers
        print(f"take-over seconds {takeovers}, retries {sender.retries}, events {sender.sent}")
    finally:
        cluster.close()


def test_nats_restarted_under_load_503_then_recovers(tmp_path: Path) -> None:
    """While NATS is down, ingest answers 503 (nothing unacknowledged is promised); once it is
    back the nodes reconnect and take their partitions again by themselves, and nothing
    acknowledged is lost."""
    server = PrivateNats(tmp_path / "jetstream")
    server.start()
    cluster = Cluster(tmp_path, 2, nats_url=server.url)
    try:
        cluster.start()
        oracle = Oracle(WINDOW)
        sender = RetryingSender(cluster, oracle, cluster.model, cluster.name)
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        time.sleep(2.0)
        server.stop()
        refused_before = sender.refused
        time.sleep(3.0)
        assert sender.refused > refused_before  # 503 while the bus is away
        sent_during = sender.sent
        server.start()
        cluster.wait_owned(timeout=60)
        assert wait_until(lambda: sender.sent > sent_during + 200, timeout=30)  # recovered
        sender.stop = True
        thread.join(60)
        cluster.wait_events(len(oracle.processed))
        assert cluster.stats()["cluster"]["events"] == len(oracle.processed)
        with cluster.live()[1].client() as client:
            check_against_oracle(client, oracle, sorted(oracle.users()))
    finally:
        cluster.close()
        server.stop()


def test_every_cluster_dashboard_metric_is_exported(two_nodes: Cluster) -> None:
    dashboard = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cluster.json"
    node = two_nodes.nodes[0]
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
    assert sorted(int(s.labels["partition"]) for s in owned) == two_nodes.stats(node)["partitions"]
