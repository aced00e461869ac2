"""The shared arena of per-user runs under a sliding window, and states saved by older releases."""

from __future__ import annotations

import numpy as np

from streamscore.features.tiles import SUM_OPS, Runs


def slide(runs: Runs, users: int, step: int, window: int) -> None:
    """One event per user at time `step`, then expiry of everything older than `window`."""
    slots = np.arange(users)
    runs.insert(slots, np.full(users, float(step)), np.ones((users, 1)), SUM_OPS, merge=False)
    runs.drop_below(float(step - window))


def test_a_sliding_window_reuses_its_room_instead_of_growing_the_arena() -> None:
    runs = Runs(columns=1)
    users, window = 500, 200
    for step in range(3 * window):  # warm-up: every user holds a full window
        slide(runs, users, step, window)
    arena = runs._rows
    for step in range(3 * window, 13 * window):
        slide(runs, users, step, window)
        # Moving each full slice to the top advanced the top ~3 rows per event, and every
        # few hundred events an O(rows) compaction or growth replaced the arena.
        assert runs._rows is arena, f"arena replaced at step {step}"
    assert runs.rows_live == users * (window + 1)
    for slot in (0, users - 1):
        keys, _ = runs.rows(slot)
        assert keys == [float(k) for k in range(13 * window - 1 - window, 13 * window)]


def test_a_state_saved_without_bases_is_read() -> None:
    runs = Runs(columns=1)
    runs.insert(np.array([0, 1, 0]), np.array([1.0, 2.0, 3.0]), np.ones((3, 1)), SUM_OPS)
    state = runs.state()
    older = {"rows": state["rows"], "segments": state["segments"][:, :3]}  # start, length, cap
    restored = Runs.from_state(older)
    restored.insert(np.array([1, 1]), np.array([5.0, 6.0]), np.ones((2, 1)), SUM_OPS)
    assert restored.rows(0) == ([1.0, 3.0], [[1.0], [1.0]])
    assert restored.rows(1) == ([2.0, 5.0, 6.0], [[1.0], [1.0], [1.0]])
