"""The Wilson interval equals scipy's, vectorised, and is [0, 1] without trials."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

from streamscore.experiments.intervals import wilson_interval


@given(st.data(), st.integers(1, 10_000), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_matches_scipy(data: st.DataObject, trials: int, confidence: float) -> None:
    successes = data.draw(st.integers(0, trials))
    expected = binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    lower, upper = wilson_interval(np.array([successes]), np.array([trials]), confidence)
    assert np.isclose(lower[0], expected.low, rtol=1e-12, atol=1e-15)
    assert np.isclose(upper[0], expected.high, rtol=1e-12, atol=1e-15)


def test_no_trials_gives_the_unit_interval() -> None:
    lower, upper = wilson_interval(np.array([0, 3]), np.array([0, 10]))
    assert (lower[0], upper[0]) == (0.0, 1.0)
    assert 0 < lower[1] < 0.3 < upper[1] < 1
