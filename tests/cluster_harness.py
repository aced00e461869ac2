"""A cluster of real `streamscore serve --cluster` processes on the local NATS, PostgreSQL and
Redis, for tests: start, kill, add nodes; read and compare with the brute-force oracle.

Every cluster gets its own name (stream, bucket, schema, Redis keys) and database, deleted by
`close`. Heartbeats are fast (1 s, dead after 3 s) so take-overs fit in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import threading
import time
import uuid
from pathlib import Path

import httpx
import nats
import numpy as np
import pytest
import redis

from streamscore.scoring.model import create_model

from .conftest import Server, create_database, drop_database, history_rows, wait_until
from .oracle import Oracle, reference_model, reference_scores

NATS_URL = os.environ.get("STREAMSCORE_TEST_NATS", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("STREAMSCORE_TEST_REDIS", "redis://127.0.0.1:6379/0")
WINDOW = 60.0
PARTITIONS = 8


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
            "heartbeat_interval": 1.0,
            "dead_after": 3.0,
            "cluster_ack_wait": 2.0,
            "features_checkpoint_every": 1.0,
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


NAMES = "events_1h,score_median_5m"


def features_match(client: httpx.Client, oracle: Oracle, users: list[str]) -> bool:
    """`events_1h` and `score_median_5m` of each user equal the oracle over the bounds the
    answer reports, which end at the oracle's stream time."""
    for user in users:
        response = client.get(f"/users/{user}/features", params={"names": NAMES})
        assert response.status_code in (200, 503), response.text
        if response.status_code != 200:
            return False
        f = response.json()["features"]
        low, high = f["events_1h"]["window_start"], f["events_1h"]["window_end"]
        count = sum(1 for u, t, _ in oracle.processed if u == user and low <= t <= high)
        if high != oracle.stream_time or f["events_1h"]["value"] != count:
            return False
        m = f["score_median_5m"]
        scores = [
            s
            for u, t, s in oracle.processed
            if u == user and m["window_start"] <= t <= m["window_end"]
        ]
        if not scores:
            if m["value"] is not None:
                return False
            continue
        expected = float(np.median(np.array(scores, dtype=np.float32).astype(np.float64)))
        if m["value"] is None or not math.isclose(m["value"], expected, rel_tol=1e-5, abs_tol=1e-6):
            return False
    return True


def check_against_oracle(client: httpx.Client, oracle: Oracle, users: list[str]) -> None:
    """Medians (once the owners have caught up with stream time), features and history."""
    assert wait_until(lambda: medians_match(client, oracle, users), timeout=20), [
        (client.get(f"/users/{u}/median").json(), oracle.median(u)) for u in users
    ]
    assert wait_until(lambda: features_match(client, oracle, users), timeout=20), [
        client.get(f"/users/{u}/features", params={"names": NAMES}).text for u in users
    ]
    for user in users:
        want = oracle.history(user)
        got = history_rows(client, user, 7)
        assert [t for t, _ in got] == [t for t, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-5, abs=1e-6)


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


def start_sender(cluster: Cluster) -> tuple[Oracle, RetryingSender, threading.Thread]:
    """A `RetryingSender` running in a thread, and the oracle it feeds."""
    oracle = Oracle(WINDOW)
    sender = RetryingSender(cluster, oracle, cluster.model, cluster.name)
    thread = threading.Thread(target=sender.run, daemon=True)
    thread.start()
    return oracle, sender, thread
