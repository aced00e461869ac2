"""Engine behaviour beyond the oracle: backfill, restarts, model vectors, sessions, memory."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.features.definitions import default, parse
from streamscore.features.engine import FeatureEngine, encode_checkpoint

V2 = """
[[sets]]
version = "v2"
[[sets.features]]
name = "purchase_amount_max"
aggregation = "max"
of = "attributes.amount"
where = { event_type = ["purchase"] }
windows = ["30m", "7d"]
[[sets.features]]
name = "session_events"
kind = "session_events"
"""


def stream(n: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(600.0, n)) - rng.exponential(3000.0, n) * (rng.random(n) < 0.3)
    return [
        (
            f"u{rng.integers(5)}",
            float(t),
            str(rng.choice(["view", "purchase"])),
            {"amount": float(rng.normal(20, 5)), "device_type": str(rng.choice(["a", "b"]))},
            float(rng.random()),
        )
        for t in ts
    ]


def batches(rows: list[tuple], cuts: list[int]):  # type: ignore[no-untyped-def]
    edges = [0, *sorted({c % max(1, len(rows)) for c in cuts}), len(rows)]
    for lo, hi in itertools.pairwise(edges):
        if hi > lo:
            b = rows[lo:hi]
            yield (
                [r[0] for r in b], np.array([r[1] for r in b]), [r[2] for r in b],
                [r[3] for r in b], np.array([r[4] for r in b]),
            )  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**6), st.lists(st.integers(0, 10**4), max_size=10),
       st.lists(st.integers(0, 10**4), max_size=10))  # fmt: skip
def test_backfill_equals_streaming(seed: int, live_cuts: list[int], log_cuts: list[int]) -> None:
    """A new version computed from the log, batched differently, equals having streamed it."""
    defs = parse(default().canonical("v1") + V2)
    rows = stream(400, seed)
    live = FeatureEngine(defs)
    for batch in batches(rows, live_cuts):
        live.update(*batch)
    backfilled = FeatureEngine.backfill(defs, ["v2"], batches(rows, log_cuts))
    users = [f"u{i}" for i in range(5)]
    assert backfilled.lookup(users, "v2") == live.lookup(users, "v2")
    with pytest.raises(KeyError, match="not computed here"):
        backfilled.get("u0", "v1")


def test_restore_refuses_other_definitions() -> None:
    defs = parse(default().canonical("v1") + V2)
    engine = FeatureEngine(defs, ["v2"])
    engine.update(["a"], np.array([10.0]), ["purchase"], [{"amount": 3.0}], np.array([0.5]))
    snapshot = engine.checkpoint()
    changed = parse(V2.replace('"30m"', '"40m"'))
    with pytest.raises(ValueError, match="checkpoint holds versions"):
        FeatureEngine(changed).restore(snapshot)
    again = FeatureEngine(defs, ["v2"])
    again.restore(snapshot)
    assert again.get("a", "v2") == engine.get("a", "v2")
    assert again.get("a", "v2")["purchase_amount_max_30m"]["value"] == 3.0


def test_sessions_gap_is_inclusive_and_late_events_bridge() -> None:
    engine = FeatureEngine(default())
    events = lambda *t: engine.update(  # noqa: E731
        ["s"] * len(t), np.array(t, float), [None] * len(t), [None] * len(t), np.zeros(len(t))
    )
    events(0.0, 1800.0)  # exactly one gap apart: one session
    assert engine.get("s", "v1", ["session_events"])["session_events"]["value"] == 2
    events(3600.5)  # just over the gap: a new session
    assert engine.get("s", "v1", ["session_events"])["session_events"]["value"] == 1
    events(2700.0)  # a late event between them joins both
    got = engine.get("s", "v1", ["session_events", "seconds_since_previous", "hour_of_day"])
    assert [v["value"] for v in got.values()] == [4, 900.5, 1]
    events(3600.5 + 1801)
    got = engine.get("s", "v1", ["session_events", "is_active_session", "engagement_score"])
    assert [v["value"] for v in got.values()] == [1, True, 100 * (0.35 * 5 / 20 + 0.25 / 10 + 0.15)]


def test_vector_is_numeric_in_the_given_order() -> None:
    engine = FeatureEngine(default())
    engine.update(["a", "a"], np.array([0.0, 60.0]), ["view", "purchase"], [None, None],
                  np.array([1.0, 3.0]))  # fmt: skip
    out = engine.vector(["a", "b"], "v1", ["score_max_24h", "purchases_1h", "is_active_session"])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[3.0, 1.0, 1.0], [np.nan, 0.0, 0.0]])
    with pytest.raises(ValueError, match="categorical"):
        engine.vector(["a"], "v1", ["last_event_type"])
    with pytest.raises(KeyError, match="unknown features"):
        engine.vector(["a"], "v1", ["nope"])
    with pytest.raises(ValueError, match="finite"):
        engine.update(["a"], np.array([1.0]), [None], [None], np.array([np.nan]))
    empty = FeatureEngine(default()).get("a", "v1", ["events_1h", "score_mean_1h"])
    assert empty == {
        "events_1h": {"value": 0, "window_start": None, "window_end": None},
        "score_mean_1h": {"value": None, "window_start": None, "window_end": None},
    }


def sessions_week(users: int, seed: int = 0) -> list[tuple]:
    """200 events per user over a week: 20 sessions of 10 events ~45 s apart, time-ordered."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        device = str(rng.choice(["mobile", "web", "tablet"]))
        for start in rng.uniform(0, 7 * 86400, 20):
            for t in start + np.cumsum(rng.exponential(45.0, 10)):
                kind = str(rng.choice(["view", "click", "purchase"], p=[0.7, 0.25, 0.05]))
                attrs = {"device_type": device, **({"amount": 25.0} if kind == "purchase" else {})}
                rows.append((f"user-{u}", float(t), kind, attrs, float(rng.random())))
    rows.sort(key=lambda r: r[1])
    return rows


def test_memory_per_user_with_a_week_of_state() -> None:
    users = 500
    engine = FeatureEngine(default())
    for batch in batches(sessions_week(users), list(range(1000, 100_000, 1000))):
        engine.update(*batch)
    per_user = engine.memory_bytes() / users
    print(f"memory per user: {per_user:.0f} B")
    assert per_user <= 4096


def test_session_lookback_follows_arrival_order_not_batches() -> None:
    """In-order events are never late, however many hours one batch spans."""
    defs = parse(
        '[[sets]]\nversion = "v1"\nsession_gap = "30m"\nsession_lookback = "1h"\n'
        '[[sets.features]]\nname = "session_events"\nkind = "session_events"\n'
    )
    ts = np.arange(0.0, 7201.0, 1200.0)  # 0 .. 2 h, 20 min apart: one session of 7
    whole, single = FeatureEngine(defs), FeatureEngine(defs)
    whole.update(["u"] * 7, ts, [None] * 7, [None] * 7, np.zeros(7))
    for t in ts:
        single.update(["u"], np.array([t]), [None], [None], np.zeros(1))
    assert whole.get("u", "v1") == single.get("u", "v1") == {"session_events": {"value": 7}}
    single.update(["u"], np.array([1800.0]), [None], [None], np.zeros(1))  # 1.5 h late: ignored
    assert single.get("u", "v1")["session_events"]["value"] == 7


def test_one_user_with_a_burst_larger_than_the_arena_is_taken_in() -> None:
    """A regression: 500 events of one user in one batch looped forever growing the arena by a
    size computed from its used rows (the same size every round)."""
    engine = FeatureEngine(default())
    n = 5000
    engine.update(["u"] * n, np.full(n, 1.7e9), [None] * n, [None] * n, np.full(n, 0.5))
    assert engine.get("u", "v1", ["events_5m"])["events_5m"]["value"] == n


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 399))
def test_a_snapshot_is_the_state_when_taken_whatever_comes_after(seed: int, cut: int) -> None:
    """Checkpoints copy the state under the lock and encode it after: updates in between must
    not leak into the copy."""
    rows = stream(400, seed)
    users = [f"u{i}" for i in range(5)]
    engine, reference = FeatureEngine(default()), FeatureEngine(default())
    for batch in batches(rows[:cut], []):
        engine.update(*batch)
        reference.update(*batch)
    snapshot = engine.snapshot()
    for batch in batches(rows[cut:], []):
        engine.update(*batch)  # after the copy
    restored = FeatureEngine(default())
    restored.restore(encode_checkpoint(snapshot))
    assert restored.lookup(users, "v1") == reference.lookup(users, "v1")
