"""The issue's proofs, by simulation of the real `MixtureSPRT`, many experiments at once.

Users arrive in blocks of 100 and split 50/50; the test is looked at after every block. Counts
per block are drawn exactly (binomial), so one experiment costs a few array operations per look.
`STREAMSCORE_LONG=1` runs ten times as many experiments.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.stats import norm

from streamscore.experiments.sequential import MixtureSPRT

ALPHA = 0.05
BLOCK = 100
SCALE = 10 if os.environ.get("STREAMSCORE_LONG") == "1" else 1
STOPPING_FACTOR = 2.0  # median mSPRT stopping size <= 2 x the fixed-sample size (measured ~1.2)


def fixed_sample_users_per_arm(p1: float, p2: float, alpha: float, power: float) -> float:
    """Two-sided two-proportion z-test (Fleiss, Statistical Methods for Rates and Proportions)."""
    mean = (p1 + p2) / 2
    z_alpha, z_beta = norm.ppf(1 - alpha / 2), norm.ppf(power)
    spread = z_alpha * np.sqrt(2 * mean * (1 - mean)) + z_beta * np.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return spread**2 / (p2 - p1) ** 2


def simulate(
    p_control: float, p_treatment: float, runs: int, max_users: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run: users when first significant (inf if never), whether the interval was then
    above 0, and whether the confidence sequence always covered the true difference."""
    rng = np.random.default_rng(seed)
    looks = max_users // BLOCK
    nc = rng.binomial(BLOCK, 0.5, size=(looks, runs))
    xc = np.cumsum(rng.binomial(nc, p_control), axis=0)
    xt = np.cumsum(rng.binomial(BLOCK - nc, p_treatment), axis=0)
    nc = np.cumsum(nc, axis=0)
    nt = BLOCK * np.arange(1, looks + 1)[:, None] - nc
    test = MixtureSPRT(ALPHA, shape=(runs,))
    stopped_at = np.full(runs, np.inf)
    positive = np.zeros(runs, np.bool_)
    covered = np.ones(runs, np.bool_)
    truth = p_treatment - p_control
    for k in range(looks):
        test.update(nc[k], xc[k], nt[k], xt[k])
        newly = (test.p_value <= ALPHA) & np.isinf(stopped_at)
        stopped_at[newly] = (k + 1) * BLOCK
        positive[newly] = test.lower[newly] > 0
        covered &= (test.lower <= truth) & (truth <= test.upper)
        assert np.array_equal(test.p_value <= ALPHA, (test.lower > 0) | (test.upper < 0))
    return stopped_at, positive, covered


def test_fixed_sample_size_has_the_stated_power() -> None:
    """The oracle for the factor: a fixed-n z-test at the formula's n has power ~0.8."""
    n = int(np.ceil(fixed_sample_users_per_arm(0.10, 0.12, ALPHA, 0.8)))
    rng = np.random.default_rng(1)
    xc, xt = rng.binomial(n, 0.10, 20_000), rng.binomial(n, 0.12, 20_000)
    pooled = (xc + xt) / (2 * n)
    z = (xt - xc) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert abs(np.mean(np.abs(z) > norm.ppf(1 - ALPHA / 2)) - 0.8) < 0.015


def test_real_effect_is_detected_in_the_right_direction_within_factor_of_fixed_n() -> None:
    fixed_total = 2 * fixed_sample_users_per_arm(0.10, 0.12, ALPHA, 0.8)  # ~7,682 users
    runs = 400 * SCALE
    stopped_at, positive, covered = simulate(0.10, 0.12, runs, max_users=60_000, seed=11)
    median = np.median(stopped_at)
    print(
        f"fixed n {fixed_total:.0f} users; mSPRT stopping n median {median:.0f}, "
        f"p80 {np.percentile(stopped_at, 80):.0f}, p90 {np.percentile(stopped_at, 90):.0f}, "
        f"stopped {np.isfinite(stopped_at).mean():.3f}, coverage {covered.mean():.3f}"
    )
    assert median <= STOPPING_FACTOR * fixed_total
    significant = np.isfinite(stopped_at)
    assert significant.mean() >= 0.95
    assert positive[significant].mean() >= 0.98
    assert covered.mean() >= 1 - ALPHA - 3 * np.sqrt(ALPHA * (1 - ALPHA) / runs)


def test_a_a_experiments_looked_at_every_100_users_rarely_become_significant() -> None:
    runs = 2000 * SCALE
    tolerance = 3 * np.sqrt(ALPHA * (1 - ALPHA) / runs)
    for p, seed in ((0.10, 21), (0.01, 22)):
        stopped_at, _, covered = simulate(p, p, runs, max_users=20_000, seed=seed)
        false_positive = np.isfinite(stopped_at).mean()
        print(f"A/A at {p:.0%}: ever significant in {false_positive:.4f} of {runs} experiments")
        assert false_positive <= ALPHA + tolerance
        assert np.array_equal(covered, ~np.isfinite(stopped_at))  # true difference is 0
