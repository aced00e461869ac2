"""The windows kernel against brute force, on randomized out-of-order streams (in-process)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.windows.event_time import StreamClock
from streamscore.windows.rolling_median import RollingMedians

from ...oracle import Oracle

events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 400).map(float) | st.floats(0, 400, width=32),
        st.floats(-5, 5, width=32) | st.sampled_from([0.0, 1.0, -1.0]),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(
    events=events,
    splits=st.lists(st.integers(1, 50), max_size=20),
    window=st.sampled_from([5.0, 30.0, 300.0]),
)
def test_medians_match_brute_force(events: list, splits: list[int], window: float) -> None:
    medians = RollingMedians()
    clock = StreamClock(window)
    oracle = Oracle(window)
    start = 0
    for size in [*splits, len(events)]:
        chunk = events[start : start + size]
        start += size
        if not chunk:
            continue
        users = [u for u, _, _ in chunk]
        ts = np.array([t for _, t, _ in chunk])
        scores = np.array([s for _, _, s in chunk], dtype=np.float32)
        late = clock.advance(ts)
        live = ts >= clock.cutoff
        medians.insert([u for u, k in zip(users, live, strict=True) if k], ts[live], scores[live])
        medians.expire(clock.cutoff)
        _, _, oracle_late = oracle.ingest(
            [{"user_id": u, "timestamp": t} for u, t, _ in chunk], scores.tolist()
        )
        assert int(late.sum()) == oracle_late
        for user in "abcde":
            assert medians.get(user) == oracle.median(user)
    nonempty = [oracle.median(u)[0] for u in "abcd" if oracle.median(u)[0] is not None]
    assert sorted(medians.medians().tolist()) == sorted(nonempty)
    assert medians.events == sum(oracle.median(u)[1] for u in "abcd")


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 8000) | st.integers(3000, 8000),
    distinct=st.sampled_from([3, 50, 100_000]),
    disorder=st.sampled_from([0.0, 5.0, 400.0]),
    trend=st.sampled_from([0.0, 1.0, -1.0]),
    window=st.sampled_from([30.0, 300.0, 600.0, 1e9]),
    batch=st.sampled_from([1, 97, 5000]),
)
def test_hot_user_matches_brute_force(
    seed: int, n: int, distinct: int, disorder: float, trend: float, window: float, batch: int
) -> None:
    """One user holds most events (thousands: blocks that split, merge and drain), with
    duplicate-heavy or continuous scores, scores that drift with time (so expiry empties whole
    blocks), out-of-order timestamps, and windows up to effectively infinite."""
    rng = np.random.default_rng(seed)
    users = np.where(rng.random(n) < 0.9, "hot", rng.choice(["a", "b"], n)).tolist()
    ts = np.arange(n) * 0.1 + rng.uniform(-disorder, 0.0, n)
    noise = rng.integers(0, distinct, n) / distinct - 0.5
    scores = (noise + trend * np.arange(n) / 100).astype(np.float32)
    medians = RollingMedians()
    clock = StreamClock(window)
    kept_ts = np.zeros(0)
    kept_users = np.zeros(0, dtype=str)
    kept_scores = np.zeros(0, dtype=np.float32)
    for start in range(0, n, batch):
        chunk = slice(start, start + batch)
        clock.advance(ts[chunk])
        live = ts[chunk] >= clock.cutoff
        chunk_users = [u for u, k in zip(users[chunk], live, strict=True) if k]
        medians.insert(chunk_users, ts[chunk][live], scores[chunk][live])
        medians.expire(clock.cutoff)
        kept_ts = np.concatenate([kept_ts, ts[chunk][live]])
        kept_users = np.concatenate([kept_users, np.array(chunk_users, dtype=str)])
        kept_scores = np.concatenate([kept_scores, scores[chunk][live]])
        inside = kept_ts >= clock.cutoff
        for user in ("hot", "a", "b"):
            mine = kept_scores[inside & (kept_users == user)].astype(np.float64)
            expected = (float(np.median(mine)), len(mine)) if len(mine) else (None, 0)
            assert medians.get(user) == expected
    assert medians.events == int((kept_ts >= clock.cutoff).sum())
