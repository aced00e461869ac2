"""`RollingMedians.medians(exclude_prefix=...)` against brute force, with slots reused."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.events import SIMULATED_PREFIX
from streamscore.windows.rolling_median import RollingMedians

users = st.sampled_from(["a", "b", "sim:a", "sim:x", "simple", "c"])


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(users, st.integers(0, 100), st.integers(-50, 50)), max_size=120),
    cutoff=st.integers(0, 101),
)
def test_medians_leave_out_the_prefixed_users(events: list, cutoff: int) -> None:
    medians = RollingMedians()
    if events:
        medians.insert(
            [u for u, _, _ in events],
            np.array([t for _, t, _ in events], dtype=float),
            np.array([s for _, _, s in events], dtype=np.float32),
        )
    medians.expire(float(cutoff))  # empties some windows: their slots are freed, then reused
    medians.insert(["sim:late", "late"], np.array([200.0, 200.0]), np.array([7, 8], "f4"))
    live: dict[str, list[float]] = {"sim:late": [7.0], "late": [8.0]}
    for u, t, s in events:
        if t >= cutoff:
            live.setdefault(u, []).append(float(s))
    expect = sorted(
        float(np.median(v)) for u, v in live.items() if not u.startswith(SIMULATED_PREFIX)
    )
    every = sorted(float(np.median(v)) for v in live.values())
    assert sorted(medians.medians(exclude_prefix=SIMULATED_PREFIX).tolist()) == expect
    assert sorted(medians.medians().tolist()) == every
