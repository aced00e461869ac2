"""PSI, KS and Wasserstein-1 on binned data against scipy on the same data, and the binning itself."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from streamscore.drift.bins import QuantileBins, index_columns
from streamscore.drift.ks import ks_critical, ks_p_value, ks_statistic
from streamscore.drift.psi import EPSILON, psi
from streamscore.drift.wasserstein import wasserstein


@st.composite
def binned_pair(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two count vectors over the same bins (neither all zero) and increasing representatives."""
    size = draw(st.integers(2, 40))
    counts = st.lists(st.integers(0, 60), min_size=size, max_size=size).filter(any)
    gaps = draw(st.lists(st.floats(0.01, 10.0), min_size=size, max_size=size))
    start = draw(st.floats(-100.0, 100.0))
    representatives = start + np.cumsum(gaps)
    return np.array(draw(counts)), np.array(draw(counts)), representatives


@settings(max_examples=200, deadline=None)
@given(binned_pair())
def test_psi_is_the_symmetrised_relative_entropy_of_the_clipped_proportions(
    pair: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    reference, current, _ = pair
    p = np.maximum(reference / reference.sum(), EPSILON)
    q = np.maximum(current / current.sum(), EPSILON)
    expected = special.rel_entr(q, p).sum() + special.rel_entr(p, q).sum()
    assert np.isclose(psi(reference, current), expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(binned_pair())
def test_psi_without_empty_bins_is_jeffreys_divergence(
    pair: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    reference, current, _ = pair
    reference, current = reference + 1, current + 1
    expected = stats.entropy(reference, current) + stats.entropy(current, reference)
    assert np.isclose(psi(reference, current), expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(binned_pair())
def test_ks_matches_ks_2samp_on_the_samples_moved_to_their_bins(
    pair: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    reference, current, representatives = pair
    expected = stats.ks_2samp(
        np.repeat(representatives, reference), np.repeat(representatives, current), method="asymp"
    )
    statistic = float(ks_statistic(reference, current))
    assert np.isclose(statistic, expected.statistic, atol=1e-12)
    p = ks_p_value(statistic, int(reference.sum()), int(current.sum()))
    assert np.isclose(p, expected.pvalue, rtol=1e-6, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([1e-4, 2.5e-4, 0.001, 0.05]), st.integers(50, 20_000), st.integers(50, 20_000)
)
def test_the_critical_value_is_where_the_p_value_crosses_alpha(
    alpha: float, n: int, m: int
) -> None:
    critical = ks_critical(alpha, n, m)
    assert ks_p_value(critical * 0.999, n, m) > alpha > ks_p_value(critical * 1.001, n, m)


@settings(max_examples=200, deadline=None)
@given(binned_pair())
def test_wasserstein_matches_scipy_on_the_representatives(
    pair: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    reference, current, representatives = pair
    expected = stats.wasserstein_distance(representatives, representatives, reference, current)
    assert np.isclose(wasserstein(reference, current, representatives), expected, rtol=1e-9)


def test_statistics_vectorise_over_values() -> None:
    rng = np.random.default_rng(3)
    reference, current = rng.integers(0, 50, (2, 5, 12))
    representatives = np.cumsum(rng.uniform(0.1, 1.0, (5, 12)), axis=1)
    for k in range(5):
        assert psi(reference, current)[k] == psi(reference[k], current[k])
        assert ks_statistic(reference, current)[k] == ks_statistic(reference[k], current[k])
        assert np.isclose(
            wasserstein(reference, current, representatives)[k],
            wasserstein(reference[k], current[k], representatives[k]),
        )


samples = st.one_of(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300),
    st.lists(st.integers(-3, 3).map(float), min_size=1, max_size=300),  # ties, constants
)


@settings(max_examples=200, deadline=None)
@given(samples, st.integers(2, 25), st.lists(st.floats(-1e7, 1e7), max_size=50))
def test_bins_against_brute_force(sample: list[float], n_bins: int, probes: list[float]) -> None:
    x = np.array(sample)
    bins = QuantileBins.fit(x, n_bins)
    assert np.all(np.diff(bins.edges) > 0)
    assert bins.size == len(bins.edges) + 1 <= 2 * n_bins - 1
    for value in [*probes, *sample]:
        assert bins.index(np.array([value]))[0] == sum(edge <= value for edge in bins.edges)
    assert bins.reference.tolist() == np.bincount(bins.index(x), minlength=bins.size).tolist()
    assert np.all(np.diff(bins.representatives) >= 0)
    for i in np.flatnonzero(bins.reference):
        assert np.isclose(bins.representatives[i], x[bins.index(x) == i].mean())
    # A value held more than a bin's worth of times is a quantile edge, hence a bin of its own.
    values, counts = np.unique(x, return_counts=True)
    for value in values[counts >= (len(x) - 1) / n_bins + 2]:
        own = bins.index(np.array([value]))[0]
        assert bins.reference[own] == np.sum(x == value)


@settings(max_examples=100, deadline=None)
@given(st.lists(samples, min_size=1, max_size=5), st.integers(0, 2**32 - 1))
def test_binning_columns_at_once_matches_each_column_alone(
    columns: list[list[float]], seed: int
) -> None:
    fitted = [QuantileBins.fit(np.array(sample), 20) for sample in columns]
    edges = np.full((len(fitted), 38), np.inf)
    for k, bins in enumerate(fitted):
        edges[k, : len(bins.edges)] = bins.edges
    rng = np.random.default_rng(seed)
    values = rng.choice(np.concatenate(columns), size=(50, len(fitted))) + rng.choice(
        [0.0, 1e-9, -0.5, 1e7], size=(50, len(fitted))
    )
    expected = np.column_stack([bins.index(values[:, k]) for k, bins in enumerate(fitted)])
    assert index_columns(values, edges).tolist() == expected.tolist()


def test_continuous_bins_hold_equal_shares_of_the_reference() -> None:
    sample = np.random.default_rng(4).normal(size=10_000)
    bins = QuantileBins.fit(sample, 20)
    assert bins.size == 20
    assert np.all(np.abs(bins.reference - 500) <= 1)


def test_a_constant_reference_sees_moves_both_ways() -> None:
    bins = QuantileBins.fit(np.full(1000, 7.0), 20)
    assert bins.index(np.array([6.9, 7.0, 7.1])).tolist() == [0, 1, 2]
