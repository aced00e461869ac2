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

from ..conftest import STORES, Server, history_rows, post_events, wait_until
from ..oracle import (
    Oracle,
    reference_model,
    reference_scores,
    send_checked,
    splits,
    stream,
    wire_events,
)

WINDOW = 60.0
_examples = itertools.count()


@pytest.fixture(scope="module", params=STORES)
def shared_server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    server = Server(
        tmp_path_factory.mktemp("oracle"), request.param, window=WINDOW, max_future_skew=1e12
    )
    server.start()
    yield server
    server.stop()
    server.drop()


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
            lambda u=user, n=expected_rows: (
                [h] if len(h := history_rows(client, u, 7)) >= n else None
            )
        )
        got = pages[0] if pages else history_rows(client, user, 7)
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
    wire = wire_events(events, users, base, f"ex{example}")
    with shared_server.client() as client:
        send_checked(client, oracle, model, wire, cuts)
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
