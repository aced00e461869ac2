"""Page-Hinkley: against a plain per-event implementation, and on where it puts a known change."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.drift.page_hinkley import PageHinkley


def brute_force(
    values: np.ndarray, delta: float, threshold: float
) -> list[tuple[int, str, int, int]]:
    """(column, direction, change event, detection event) of each alarm, event by event."""
    found = []
    for c in range(values.shape[1]):
        mean, origin, up, down = 0.0, 0, [0.0], [0.0]
        for t, x in enumerate(values[:, c], start=1):
            up.append(up[-1] + (x - mean) - delta)
            down.append(down[-1] - (x - mean) - delta)
            for direction, walk, sign in (("up", up, 1), ("down", down, -1)):
                low = int(np.argmin(walk))
                if walk[-1] - walk[low] > threshold:
                    found.append((c, direction, origin + low, t))
                    mean += sign * ((walk[-1] - walk[low]) / (len(walk) - 1 - low) + delta)
                    origin, up, down = t, [0.0], [0.0]
                    break
    return sorted(found)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 0.5),
    st.floats(2.0, 30.0),
    st.lists(st.integers(1, 300), min_size=1, max_size=8),
)
def test_matches_the_event_by_event_definition(
    seed: int, delta: float, threshold: float, batches: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    n = sum(batches)
    steps = np.cumsum(rng.choice([0.0, 1.5, -1.5], size=n, p=[0.99, 0.005, 0.005]))
    values = rng.normal(size=(n, 2)) + np.c_[steps, -steps]
    detector = PageHinkley(columns=2, delta=delta, threshold=threshold)
    detector.start(0, 0.0, 1.0)
    detector.start(1, 0.0, 1.0)
    found = []
    for low, high in zip(np.cumsum([0, *batches[:-1]]), np.cumsum(batches), strict=True):
        found += detector.update(values[low:high], np.arange(low, high, dtype=np.float64))
    got = sorted((c.column, c.direction, c.event, c.detected_event) for c in found)
    assert got == brute_force(values, delta, threshold)
    for change in found:
        # timestamps are positions here; a change before the first event has no time
        assert change.time == change.event - 1 or (change.event == 0 and np.isnan(change.time))
        assert change.detected_time == change.detected_event - 1


def test_a_half_sd_shift_is_placed_near_where_it_happened() -> None:
    rng = np.random.default_rng(11)
    mean, sd, at = 3.0, 2.0, 40_000
    values = rng.normal(mean, sd, size=(100_000, 1))
    values[at:] += 0.5 * sd
    timestamps = 1.7e9 + np.arange(100_000) / 1000
    detector = PageHinkley(columns=1)
    detector.start(0, mean, sd)
    found = []
    for low in range(0, 100_000, 500):
        found += detector.update(values[low : low + 500], timestamps[low : low + 500])
    assert len(found) == 1
    (change,) = found
    assert change.direction == "up"
    assert abs(change.event - at) <= 100
    assert change.time == timestamps[change.event - 1]
    assert 0 < change.detected_event - at <= 600
    assert abs(change.shift - 0.5 * sd) < 0.25 * sd


def test_a_constant_baseline_sees_any_move() -> None:
    detector = PageHinkley(columns=1)
    detector.start(0, 5.0, 0.0)
    values = np.r_[np.full(100, 5.0), np.full(100, 5.001)][:, None]
    (change,) = detector.update(values, np.arange(200.0))
    assert (change.direction, change.event, change.detected_event) == ("up", 100, 101)
    assert np.isclose(change.shift, 0.001)


def test_an_unwatched_column_never_alarms() -> None:
    detector = PageHinkley(columns=2)
    detector.start(1, 0.0, 1.0)
    values = np.c_[np.full(5000, 1e6), np.zeros(5000)]
    assert detector.update(values, np.arange(5000.0)) == []
