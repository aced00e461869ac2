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
import math
import os
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

from streamscore.scoring.model import create_model

from ..conftest import Server, create_database, drop_database, post_events, wait_until
from ..oracle import Oracle, reference_model, reference_scores

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
