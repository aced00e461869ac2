"""Features end to end over HTTP: a brute-force oracle over out-of-order streams spanning more
than seven days with a crash-restart in the middle (both stores), a custom file whose versions
are added later (backfilled at start and by the CLI, equal to the oracle; a changed one
refused), validation by index, and a TorchScript model that reads features."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from streamscore.features.definitions import default, parse
from tests.conftest import Server, post_events, wait_until
from tests.unit.features.feature_oracle import Event, check, expected

DAY = 86_400.0
USERS = ["ann", "bob", "cy", "dee"]


def stream(rng: np.random.Generator, start: float, end: float, n: int) -> list[dict[str, Any]]:
    """Events in arrival order whose timestamps trail an advancing cursor by random delays
    (up to 9 days: out of order, across every window); each user's timestamps are distinct,
    so history rows pair with what was sent."""
    cursor = np.sort(rng.uniform(start, end, n))
    delays = rng.choice([0.0, 60.0, 1800.0, 3 * 3600.0, 2 * DAY, 9 * DAY], n) * rng.random(n)
    events = []
    for t, delay in zip(cursor, delays, strict=True):
        event: dict[str, Any] = {
            "user_id": str(rng.choice(USERS)),
            "timestamp": round(float(max(start - 9 * DAY, t - delay)), 3),
            "features": [float(x) for x in rng.normal(size=3)],
        }
        kind = rng.choice([None, "view", "purchase", "click"])
        if kind is not None:
            event["event_type"] = str(kind)
        if rng.random() < 0.7:
            attrs: dict[str, Any] = {"amount": round(float(rng.uniform(0, 100)), 2)}
            if rng.random() < 0.6:
                attrs["device_type"] = str(rng.choice(["web", "ios", "android", "tv"]))
            if rng.random() < 0.2:
                attrs["flag"] = bool(rng.random() < 0.5)
            event["attributes"] = attrs
        events.append(event)
    return events


class Oracle:
    """Every accepted event with the score the server gave it (read back from history)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.time = -math.inf

    def add(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.time = max(self.time, e["timestamp"])
            self.sent.append({**e, "reached": self.time})

    def log(self, client: httpx.Client) -> list[Event]:
        scores: dict[tuple[str, float], float] = {}
        for user in USERS:
            rows = client.get(f"/users/{user}/history", params={"limit": 10_000}).json()
            scores.update({(user, r["timestamp"]): r["score"] for r in rows["history"]})
        log = []
        for i, e in enumerate(self.sent):
            score = scores[(e["user_id"], e["timestamp"])]
            log.append(
                Event(
                    e["user_id"],
                    e["timestamp"],
                    e.get("event_type"),
                    e.get("attributes"),
                    score,
                    i,
                    e["reached"],
                )
            )
        return log

    def verify(self, client: httpx.Client, defs: Any, versions: list[str]) -> None:
        log = wait_until(lambda: self._complete(client), timeout=30)
        for version in versions:
            fs = defs[version]
            body = client.post(
                "/features/lookup", json={"users": [*USERS, "nobody"], "version": version}
            ).json()
            for answer in body["users"]:
                assert answer["version"] == version
                assert answer["stream_time"] == self.time
                check(fs, answer["features"], expected(fs, answer["user_id"], log, self.time))

    def _complete(self, client: httpx.Client) -> list[Event] | None:
        try:
            return self.log(client)
        except KeyError:  # history trails the acks by the index interval
            return None


def ingest(client: httpx.Client, events: list[dict[str, Any]], size: int = 40) -> None:
    for i in range(0, len(events), size):
        body = post_events(client, events[i : i + size], ndjson=False)
        assert body["rejected"] == 0, body


def test_default_set_equals_the_oracle_across_restarts(server_factory, store_kind) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(14)
    # Checkpoints every 0.2 s: the SIGKILL restart resumes from one and replays the rest.
    server = server_factory(store_kind=store_kind, features_checkpoint_every=0.2)
    now = time.time()
    oracle = Oracle()
    phases = [(now - 12 * DAY, now - 8 * DAY), (now - 8 * DAY, now - 2 * DAY), (now - 2 * DAY, now)]
    for k, (start, end) in enumerate(phases):
        events = stream(rng, start, end, 160)
        with server.client() as client:
            ingest(client, events)
            oracle.add(events)
            oracle.verify(client, default(), ["v1"])
        if k == 1:
            # The periodic checkpoint catches up with everything acknowledged...
            total = len(oracle.sent)
            assert wait_until(lambda: checkpoint_seq(server) == total, timeout=30)  # noqa: B023
            with server.client() as client:
                extra = stream(rng, end - DAY, end, 40)
                ingest(client, extra)
                oracle.add(extra)
            server.restart(sig=9)  # ...so a crash replays at most the events after it
            replayed = [
                json.loads(line)["replayed_events"]
                for line in server.log().splitlines()
                if '"features restored"' in line
            ]
            assert replayed[0] == 0 and 0 <= replayed[-1] <= len(extra)
            with server.client() as client:
                oracle.verify(client, default(), ["v1"])


def checkpoint_seq(server: Server) -> int | None:
    """The seq covered by v1's checkpoints: its base's, or the last delta's over that base."""
    rows = server.query(
        "SELECT key, value FROM state WHERE key = 'features.checkpoint.v1' "
        "OR key LIKE 'features.checkpoint.v1.delta%'"
    )
    blobs = {key: bytes(value) for key, value in rows}
    if "features.checkpoint.v1" not in blobs:
        return None
    base = blobs.pop("features.checkpoint.v1")
    seqs = [int.from_bytes(base[:8], "little")]
    for blob in blobs.values():
        if blob[8:16] == base[8:16]:
            seqs.append(int.from_bytes(blob[:8], "little"))
    return max(seqs)


V3 = """
[[sets]]
version = "v3"
session_gap = "5m"

[[sets.features]]
name = "buys"
aggregation = "count"
where = { event_type = ["purchase"] }
windows = ["10m", "1d"]

[[sets.features]]
name = "device"
aggregation = "last"
of = "attributes.device_type"

[[sets.features]]
name = "amount_median"
aggregation = "median"
of = "attributes.amount"
windows = ["6h"]

[[sets.features]]
name = "session_events"
kind = "session_events"
"""


def _serve_exit(store: str, features: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "streamscore", "serve", "--store", store, "--port", "1"]
    return subprocess.run(
        [*args, "--features", str(features)], capture_output=True, text=True, timeout=60
    )


def test_versions_backfill_equals_streaming_and_changes_are_refused(
    server_factory, store_kind, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A custom file gains versions on a store with history: v3 is backfilled at start in the
    background, v4 by the CLI; both equal the oracle (what streaming computes)."""
    v1 = default().canonical("v1")
    v4 = V3.replace('"v3"', '"v4"').replace('"6h"', '"2h"')
    files = {}
    for name, text in {"v1": v1, "v3": v1 + V3, "v4": v1 + V3 + v4}.items():
        files[name] = tmp_path / f"{name}.toml"
        files[name].write_text(text)
    rng = np.random.default_rng(7)
    now = time.time()
    oracle = Oracle()
    server = server_factory(store_kind=store_kind, features=files["v1"])
    events = stream(rng, now - 10 * DAY, now - DAY, 300)
    with server.client() as client:
        ingest(client, events, size=60)
        oracle.add(events)
    server.stop()
    server.options.update(features=files["v3"], features_default_version="v3")
    server.start()
    with server.client() as client:
        wait_until(
            lambda: client.get("/features/versions").json()["versions"][1]["state"] == "ready"
        )
        info = client.get("/features/versions").json()
        assert info["default"] == "v3"
        assert info["versions"][1]["backfill"]["events"] == len(events)
        assert "streamscore_features_backfill_progress" in client.get("/metrics").text
        more = stream(rng, now - DAY, now, 60)
        ingest(client, more)
        oracle.add(more)
        oracle.verify(client, parse(files["v3"].read_text()), ["v1", "v3"])
        assert client.get("/users/ann/features").json()["version"] == "v3"
        one = client.get("/users/ann/features/buys_1d").json()
        assert set(one["features"]) == {"buys_1d"}
        assert client.get("/users/ann/features/events_5m").status_code == 404  # not in v3
        assert client.get("/users/ann/features", params={"version": "v9"}).status_code == 404
    server.stop()
    store = str(server.options["store"])
    done = subprocess.run(
        [sys.executable, "-m", "streamscore", "features", "backfill", "--store", store,
         "--features", str(files["v4"]), "--version", "v4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    server.options.update(features=files["v4"])
    server.start()
    with server.client() as client:
        info = client.get("/features/versions").json()["versions"][2]
        assert (info["state"], info["backfill"]["total"]) == ("ready", 0)  # restored, not redone
        oracle.verify(client, parse(files["v4"].read_text()), ["v1", "v3", "v4"])
    server.stop()
    # Editing v3 in place is refused: exit 2 with a message that says what to do.
    changed = tmp_path / "changed.toml"
    changed.write_text(v1 + V3.replace('"10m", "1d"', '"10m", "2d"'))
    done = _serve_exit(store, changed)
    assert done.returncode == 2
    assert "feature version 'v3' changed" in done.stderr
    assert "new version" in done.stderr


def test_event_fields_are_validated_with_their_index(server) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    good = {"user_id": "val", "timestamp": now, "features": [1.0, 2.0, 3.0]}
    bad = [
        {**good, "timestamp": "2026-01-05T10:30:00"},  # no zone
        {**good, "timestamp": "yesterday"},
        {**good, "event_type": ""},
        {**good, "event_type": "x" * 65},
        {**good, "attributes": {f"k{i}": i for i in range(33)}},
        {**good, "attributes": {"": 1}},
        {**good, "attributes": {"k" * 65: 1}},
        {**good, "attributes": {"s": "x" * 257}},
        {**good, "attributes": {"n": None}},
        {**good, "attributes": {"o": {"nested": 1}}},
        {**good, "attributes": [1]},
        {**good, "event_type": "a\u0000b"},
        {**good, "attributes": {"s": "a\u0000"}},
        {key: v for key, v in good.items() if key != "features"},  # the model reads raw ones
    ]
    fine = [
        {**good, "timestamp": "2026-01-05T10:30:00Z"},
        {**good, "timestamp": "2026-01-05T11:30:00.250+01:00", "event_type": "e" * 64},
        {**good, "attributes": {f"k{i}": i for i in range(32)}},
        {**good, "attributes": {"a": 1.5, "b": "x" * 256, "c": True, "k" * 64: -3}},
    ]
    events = [x for pair in zip(bad, fine + [good] * len(bad), strict=False) for x in pair]
    with server.client() as client:
        body = client.post("/ingest", json={"events": events}).json()
    assert body["processed"] == len(bad)
    assert [e["index"] for e in body["errors"]] == list(range(0, 2 * len(bad), 2))
    reasons = [e["error"] for e in body["errors"]]
    assert "timezone" in reasons[0] and "event_type" in reasons[2]
    assert "NUL" in reasons[11] and "NUL" in reasons[12]


class FeatureModel(torch.nn.Module):
    """score = events_1h + 100 * purchases_24h + 1000 * is_active_session"""

    def __init__(self) -> None:
        super().__init__()
        self.n_features = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] + 100.0 * x[:, 1] + 1000.0 * x[:, 2]


def test_a_torchscript_model_reads_features(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "reader.pt"
    torch.jit.script(FeatureModel()).save(str(model))
    names = ["events_1h", "purchases_24h", "is_active_session"]
    model.with_suffix(".features.json").write_text(json.dumps({"features": names}))
    server = server_factory(model=model)
    now = time.time()
    kinds = ["view", "purchase", None, "purchase"]
    with server.client() as client:
        for k, kind in enumerate(kinds):  # no raw `features`: the model reads none
            event: dict[str, Any] = {"user_id": "m", "timestamp": now - 3000 + 600 * k}
            if kind:
                event["event_type"] = kind
            assert client.post("/ingest", json={"events": [event]}).json()["processed"] == 1
        # Two events of one user in one request: the second sees the first, and itself.
        both = [{"user_id": "n", "timestamp": now - 10}, {"user_id": "n", "timestamp": now - 5}]
        assert client.post("/ingest", json={"events": both}).json()["processed"] == 2
        m = wait_until(lambda: client.get("/users/m/history").json()["history"])
        n = wait_until(lambda: client.get("/users/n/history").json()["history"])
    assert [r["score"] for r in m] == [1001.0, 1102.0, 1103.0, 1204.0]
    assert [r["score"] for r in n] == [1001.0, 1002.0]


def test_history_returns_each_events_type_and_attributes(server_factory, store_kind) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind=store_kind)
    now = time.time()
    sent = [
        {"event_type": "purchase", "attributes": {"amount": 19.99, "device_type": "mobile"}},
        {},
        {"event_type": "view"},
        {"attributes": {"first": True}},
    ]
    events = [
        {"user_id": "d", "timestamp": now - 10 + k, "features": [0.1, 0.2, 0.3], **fields}
        for k, fields in enumerate(sent)
    ]

    def details(client: httpx.Client) -> list[dict]:
        rows = client.get("/users/d/history").json()["history"]
        return [{k: v for k, v in r.items() if k not in ("timestamp", "score")} for r in rows]

    with server.client() as client:
        assert client.post("/ingest", json={"events": events}).json()["processed"] == 4
        assert details(client) == sent  # at once: from the acknowledged log
    server.restart()  # everything chunked
    with server.client() as client:
        assert details(client) == sent
