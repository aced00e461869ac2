"""Randomized streams through a real server equal a brute-force oracle: medians, counts, history.

One server serves every example. Each example gets its own user ids, event ids and a time base
far past the previous example's, so earlier examples are all out of its windows.
"""

from __future__ import annotations

import itertools
import math

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..conftest import STORES, Server, post_events, wait_until
from ..oracle import Oracle, reference_model, reference_scores

WINDOW = 60.0
_examples = itertools.count()

event = st.fixed_dictionaries(
    {
        "user": st.integers(0, 5),
        # Offsets around the base: many in-window, some far behind (late), repeats of the same ts.
        "offset": st.integers(-200, 120).map(float) | st.floats(-5, 5).map(lambda x: round(x, 3)),
        "features": st.lists(st.floats(-10, 10, width=32), min_size=3, max_size=3),
        "event_id": st.none() | st.integers(0, 15),
    }
)
stream = st.lists(event, min_size=1, max_size=120)
splits = st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=8)


@pytest.fixture(scope="module", params=STORES)
def shared_server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    server = Server(
        tmp_path_factory.mktemp("oracle"), request.param, window=WINDOW, max_future_skew=1e12
    )
    server.start()
    yield server
    server.stop()
    server.drop()


def history(client: httpx.Client, user: str, page: int) -> list[tuple[float, float]]:
    rows: list[tuple[float, float]] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": page}
        if cursor:
            params["cursor"] = cursor
        body = client.get(f"/users/{user}/history", params=params).json()
        rows += [(p["timestamp"], p["score"]) for p in body["history"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


def check_against_oracle(client: httpx.Client, oracle: Oracle, users: list[str]) -> None:
    for user in users:
        body = client.get(f"/users/{user}/median").json()
        expected, count = oracle.median(user)
        assert body["count"] == count, user
        if expected is None:
            assert body["median"] is None
        else:
            assert body["median"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert body["window_end"] == oracle.stream_time
        assert body["window_start"] == oracle.stream_time - WINDOW
        want = oracle.history(user)
        expected_rows = len(want)
        pages = wait_until(
            lambda u=user, n=expected_rows: [h] if len(h := history(client, u, 7)) >= n else None
        )
        got = pages[0] if pages else history(client, user, 7)
        assert [t for t, _ in got] == [t for t, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-5, abs=1e-6)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=stream, cuts=splits)
def test_random_streams_match_oracle(shared_server: Server, events: list[dict], cuts: list) -> None:
    example = next(_examples)
    base = 1.9e9 + example * 1e6
    model = reference_model(shared_server.store_dir / "demo_model.pt")
    oracle = Oracle(WINDOW, stream_time=base - 1e5)
    users = [f"ex{example}-user-{u}" for u in range(6)]
    wire = []
    for e in events:
        item = {
            "user_id": users[e["user"]],
            "timestamp": base + e["offset"],
            "features": e["features"],
        }
        if e["event_id"] is not None:
            item["event_id"] = f"ex{example}-id-{e['event_id']}"
        wire.append(item)

    with shared_server.client() as client:
        start = 0
        for size, ndjson in itertools.chain(cuts, itertools.repeat((40, False))):
            chunk = wire[start : start + size]
            if not chunk:
                break
            start += size
            scores = reference_scores(model, [e["features"] for e in chunk])
            processed, duplicates, late = oracle.ingest(chunk, scores)
            body = post_events(client, chunk, ndjson)
            assert (body["processed"], body["duplicates"], body["late"]) == (
                processed,
                duplicates,
                late,
            )
            assert body["rejected"] == 0
        check_against_oracle(client, oracle, users)


def test_state_survives_restart(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    """Medians, counters and duplicate detection equal the oracle after SIGTERM and kill -9."""
    server = server_factory(store_kind=store_kind, window=WINDOW, max_future_skew=1e12)
    model = reference_model(server.store_dir / "demo_model.pt")
    oracle = Oracle(WINDOW)
    users = [f"user-{i}" for i in range(20)]
    base = 1.9e9
    rng = __import__("random").Random(7)

    def batch(n: int, step: int) -> list[dict]:
        return [
            {
                "user_id": rng.choice(users),
                "timestamp": base + step * 10 + rng.uniform(-80, 10),
                "features": [rng.uniform(-3, 3) for _ in range(3)],
                "event_id": f"id-{rng.randrange(3000)}",
            }
            for _ in range(n)
        ]

    def ingest_steps(client: httpx.Client, steps: range) -> None:
        for step in steps:
            chunk = batch(200, step)
            scores = reference_scores(model, [e["features"] for e in chunk])
            expected = oracle.ingest(chunk, scores)
            body = post_events(client, chunk, ndjson=step % 2 == 0)
            assert (body["processed"], body["duplicates"], body["late"]) == expected

    with server.client() as client:
        ingest_steps(client, range(0, 10))
        check_against_oracle(client, oracle, users)
    for sig in ("SIGTERM", "SIGKILL"):
        server.restart(getattr(__import__("signal"), sig))
        with server.client() as client:
            check_against_oracle(client, oracle, users)
            stats = client.get("/stats").json()
            assert stats["event_count"] == len(oracle.processed)
            assert stats["late_events"] == oracle.late
            assert stats["duplicate_events"] == oracle.duplicates
            assert stats["stream_time"] == oracle.stream_time
            # Event ids acknowledged before the restart are still recognised.
            ingest_steps(client, range(10, 14))
            check_against_oracle(client, oracle, users)
    assert not math.isnan(oracle.stream_time)
