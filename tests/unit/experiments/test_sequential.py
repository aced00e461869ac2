"""The mSPRT's closed forms against brute-force integration, and its running state's invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp

from streamscore.experiments.sequential import (
    MIN_OUTCOMES,
    MixtureSPRT,
    confidence_radius,
    difference_and_variance,
    log_likelihood_ratio,
)

variances = st.floats(1e-6, 1e-2)
taus = st.floats(1e-3, 0.1)
differences = st.floats(-0.05, 0.05)


def integrated_log_lr(diff: float, variance: float, tau: float, theta0: float) -> float:
    """log of the integral over theta of N(diff; theta, V) / N(diff; theta0, V) * N(theta; theta0, tau^2)."""
    spread = 14 * max(np.sqrt(variance), tau)
    theta = np.linspace(min(diff, theta0) - spread, max(diff, theta0) + spread, 100_001)
    log_integrand = (
        -((diff - theta) ** 2) / (2 * variance)
        + (diff - theta0) ** 2 / (2 * variance)
        - (theta - theta0) ** 2 / (2 * tau * tau)
        - 0.5 * np.log(2 * np.pi * tau * tau)
    )
    return float(logsumexp(log_integrand) + np.log(theta[1] - theta[0]))


@given(differences, variances, taus, st.floats(-0.02, 0.02))
def test_closed_form_equals_the_mixture_integral(
    diff: float, variance: float, tau: float, theta0: float
) -> None:
    expected = integrated_log_lr(diff, variance, tau, theta0)
    assert log_likelihood_ratio(diff, variance, tau, theta0) == pytest.approx(
        expected, rel=1e-6, abs=1e-6
    )


@given(differences, variances, taus, st.sampled_from([0.01, 0.05, 0.2]))
def test_radius_is_where_the_ratio_reaches_one_over_alpha(
    diff: float, variance: float, tau: float, alpha: float
) -> None:
    radius = confidence_radius(variance, tau, alpha)
    for edge in (diff - radius, diff + radius):
        assert log_likelihood_ratio(diff, variance, tau, edge) == pytest.approx(np.log(1 / alpha))
    assert log_likelihood_ratio(diff, variance, tau, diff + 0.99 * radius) < np.log(1 / alpha)


def test_difference_and_smoothed_variance() -> None:
    diff, variance = difference_and_variance(100, 10, 50, 0)
    assert diff == pytest.approx(-0.1)
    assert variance == pytest.approx((11 / 102) * (91 / 102) / 100 + (1 / 52) * (51 / 52) / 50)


arrivals = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=1, max_size=30)


@given(arrivals)
def test_vectorised_state_equals_one_test_per_sequence(steps: list[tuple[int, int]]) -> None:
    """Random count paths, run one test per path and all at once; also p-value/interval agree."""
    rng = np.random.default_rng(len(steps))
    paths = 8
    nc = np.cumsum([[a + i for i in range(paths)] for a, _ in steps], axis=0)
    nt = np.cumsum([[b] * paths for _, b in steps], axis=0)
    xc = np.minimum(nc, np.cumsum(rng.binomial(np.diff(nc, axis=0, prepend=0), 0.1), axis=0))
    xt = np.minimum(nt, np.cumsum(rng.binomial(np.diff(nt, axis=0, prepend=0), 0.2), axis=0))
    together = MixtureSPRT(shape=(paths,))
    alone = [MixtureSPRT() for _ in range(paths)]
    for k in range(len(steps)):
        together.update(nc[k], xc[k], nt[k], xt[k])
        for j, test in enumerate(alone):
            test.update(nc[k, j], xc[k, j], nt[k, j], xt[k, j])
        assert np.allclose(together.p_value, [float(t.p_value) for t in alone], rtol=1e-12)
        assert np.allclose(together.lower, [float(t.lower) for t in alone], rtol=1e-12)
        assert np.allclose(together.upper, [float(t.upper) for t in alone], rtol=1e-12)
        outside = (together.lower > 0) | (together.upper < 0)
        assert (together.p_value <= 0.05).tolist() == outside.tolist()


def test_p_value_never_rises_and_interval_only_shrinks() -> None:
    rng = np.random.default_rng(7)
    test = MixtureSPRT()
    n = np.cumsum(rng.binomial(100, 0.5, size=(200, 2)), axis=0)
    x = np.cumsum(rng.binomial(np.diff(n, axis=0, prepend=0), 0.1), axis=0)
    previous = (1.0, -1.0, 1.0)
    for (nc, nt), (xc, xt) in zip(n, x, strict=True):
        test.update(nc, xc, nt, xt)
        p, lo, hi = float(test.p_value), float(test.lower), float(test.upper)
        assert p <= previous[0] and lo >= previous[1] and hi <= previous[2]
        previous = (p, lo, hi)
    assert previous[2] - previous[1] < 0.03  # ~10,000 users per arm


@pytest.mark.parametrize(
    "counts",
    [
        (1000, 900, 0, 0),  # one arm empty
        (5000, 0, 5000, MIN_OUTCOMES - 1),  # too few conversions for the normal approximation
        (5000, 5000, 5000, 5000 - MIN_OUTCOMES + 1),  # too few non-conversions
    ],
)
def test_looks_are_skipped_until_the_approximation_holds(counts: tuple[int, ...]) -> None:
    test = MixtureSPRT()
    test.update(*counts)
    assert (float(test.p_value), float(test.lower), float(test.upper)) == (1.0, -1.0, 1.0)
    test.update(5000, 500, 5000, 520)
    assert float(test.upper) - float(test.lower) < 1


def test_empty_intersection_collapses_to_the_gap_midpoint() -> None:
    test = MixtureSPRT(alpha=0.05)
    test.update(20_000, 2_000, 20_000, 2_600)  # clearly positive
    assert float(test.lower) > 0
    test.update(2_000_000, 200_000, 2_000_000, 200_000)  # a narrow interval around 0
    assert float(test.lower) == float(test.upper) > 0
    assert float(test.p_value) <= 0.05


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        MixtureSPRT(alpha=1.5)
    with pytest.raises(ValueError):
        MixtureSPRT(tau=0.0)
