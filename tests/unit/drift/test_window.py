"""The sliding per-bin counts against a histogram of the last `window` events, recomputed."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.drift.window import SlidingCounts


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(2, 6),
    st.lists(st.integers(0, 60), min_size=1, max_size=20),
    st.integers(0, 2**32 - 1),
)
def test_counts_are_the_histogram_of_the_last_window_events(
    window: int, slots: int, batch_sizes: list[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    sliding = SlidingCounts(window, columns=3, slots=slots)
    seen = np.empty((0, 3), dtype=np.int64)
    times = np.empty(0)
    for size in batch_sizes:
        index = rng.integers(0, slots - 1, (size, 3))  # the last slot is "no value"
        stamps = rng.uniform(0, 100, size)
        sliding.update(index, stamps)
        seen, times = np.vstack([seen, index]), np.concatenate([times, stamps])
        last = seen[-window:]
        for k in range(3):
            expected = np.bincount(last[:, k], minlength=slots)[:-1]
            assert sliding.counts[k, :-1].tolist() == expected.tolist()
        for events in {1, len(last)} if len(last) else ():
            assert sliding.time_range(events) == (times[-events:].min(), times[-events:].max())


def test_columns_come_and_go_without_disturbing_the_others() -> None:
    sliding = SlidingCounts(window=4, columns=2, slots=3)
    sliding.update(np.array([[0, 1], [1, 1]]), np.array([1.0, 2.0]))
    sliding.add_column()
    sliding.update(np.array([[0, 0, 1], [0, 0, 1], [1, 1, 0]]), np.array([3.0, 4.0, 5.0]))
    assert sliding.counts[:, :-1].tolist() == [[2, 2], [2, 2], [1, 2]]
    sliding.clear_column(0)
    sliding.remove_column(1)
    assert sliding.counts[:, :-1].tolist() == [[0, 0], [1, 2]]
    sliding.update(np.array([[1, 1]]), np.array([6.0]))
    assert sliding.counts[:, :-1].tolist() == [[0, 1], [1, 3]]
