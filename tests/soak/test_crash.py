"""Crash safety with real kills: every acknowledged event is stored exactly once.

Client threads post batches of events with unique `event_id`s while the server is killed
(`kill -9`) at random moments and restarted. A batch whose response never arrived is retried
after the restart, as a careful client would; duplicates must be recognised, not stored twice.
"""

from __future__ import annotations

import queue
import random
import signal
import statistics
import threading
import time

import httpx
import pytest

from ..conftest import LONG, Server

# Run alone (scripts/test): kill cycles under load, bounded in time.
pytestmark = pytest.mark.serial

USERS = 50
BATCH = 200


def make_batch(k: int, rng: random.Random) -> list[dict]:
    now = time.time()
    return [
        {
            "user_id": f"user-{rng.randrange(USERS)}",
            "timestamp": now - rng.random() * 5,
            "features": [rng.uniform(-2, 2) for _ in range(3)],
            "event_id": f"b{k}-e{i}",
        }
        for i in range(BATCH)
    ]


class Client:
    """Posts batches from a queue; sorts each into acknowledged or unknown (no response)."""

    def __init__(self, server: Server, threads: int = 4) -> None:
        self.server = server
        self.todo: queue.Queue[int] = queue.Queue()
        self.bodies: dict[int, list[dict]] = {}
        self.acked: dict[int, dict] = {}
        self.unknown: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                try:
                    k = self.todo.get(timeout=0.1)
                except queue.Empty:
                    continue
                try:
                    r = http.post(self.server.url + "/ingest", json={"events": self.bodies[k]})
                except httpx.TransportError:
                    with self.lock:
                        self.unknown.add(k)
                    continue
                with self.lock:
                    if r.status_code == 200:
                        self.acked[k] = r.json()
                        self.unknown.discard(k)
                    else:
                        self.unknown.add(k)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def stored_event_ids(server: Server) -> list[str]:
    return [r[0] for r in server.query("SELECT event_id FROM events")]


def oracle_medians(server: Server, window: float) -> dict[str, float]:
    rows = server.query("SELECT user_id, timestamp, score FROM events")
    stream_time = max(ts for _, ts, _ in rows)
    by_user: dict[str, list[float]] = {}
    for user, ts, score in rows:
        if ts >= stream_time - window:
            by_user.setdefault(user, []).append(score)
    return {user: statistics.median(scores) for user, scores in by_user.items()}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_acknowledged_events_survive_kills_exactly_once(
    server_factory, store_kind: str, sig: int
) -> None:  # type: ignore[no-untyped-def]
    cycles = 20 if LONG else 3
    rng = random.Random(sig)
    server = server_factory(store_kind=store_kind)
    client = Client(server)
    client.start()
    next_batch = 0
    for _ in range(cycles):
        # Keep the clients busy, then kill at a random moment mid-stream.
        for _ in range(40):
            client.bodies[next_batch] = make_batch(next_batch, rng)
            client.todo.put(next_batch)
            next_batch += 1
        time.sleep(rng.uniform(0.2, 1.2))
        server.stop(sig)
        time.sleep(0.2)
        server.start()
        # Retry every batch whose outcome is unknown: committed ones must come back as duplicates.
        while not client.todo.empty():
            time.sleep(0.05)
        time.sleep(0.5)
        with client.lock:
            retry = sorted(client.unknown)
        for k in retry:
            client.todo.put(k)
    deadline = time.monotonic() + 120
    while len(client.acked) < next_batch and time.monotonic() < deadline:
        time.sleep(0.5)
        if client.todo.empty():
            with client.lock:
                retry = sorted(client.unknown - set(client.acked))
            for k in retry:
                client.todo.put(k)
    client.join()
    missing = sorted(set(range(next_batch)) - set(client.acked))
    assert not missing, f"every batch is acknowledged in the end; missing {missing[:20]}"

    server.stop(signal.SIGTERM)  # a clean stop indexes everything logged
    ids = stored_event_ids(server)
    expected = {e["event_id"] for body in client.bodies.values() for e in body}
    assert len(ids) == len(set(ids)), "no event stored twice"
    assert set(ids) == expected, "every acknowledged event is stored"
    reported_duplicates = sum(r["duplicates"] for r in client.acked.values())
    assert sum(r["processed"] for r in client.acked.values()) + reported_duplicates >= len(expected)

    server.start()
    expected_medians = oracle_medians(server, window=300)
    with server.client() as http:
        for user, median in expected_medians.items():
            body = http.get(f"/users/{user}/median").json()
            assert body["median"] == pytest.approx(median, rel=1e-9, abs=1e-12), user
