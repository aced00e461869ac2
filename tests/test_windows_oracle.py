"""The windows kernel against brute force, on randomized out-of-order streams (in-process)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.windows.rolling_median import RollingMedians
from streamscore.windows.stream_time import StreamClock

from .oracle import Oracle

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
