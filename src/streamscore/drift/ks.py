"""Two-sample Kolmogorov-Smirnov test on binned data: `D = max |F_ref - F_cur|` over the bin edges.

Binning only ever hides a difference: the true statistic is a maximum over every point of the
line, the binned one over the bin edges only, so `D_binned ≤ D` and its p-value is at least the
exact one. The test is therefore conservative (its false-positive rate is at most the nominal
level, below it by however much the edges miss the largest gap; with 20 quantile bins the loss is
small for a shift of location or scale, whose largest gap is in the body of the distribution).
`D_binned` equals what `scipy.stats.ks_2samp` computes on the samples with every value moved to
its bin's representative.

p-values come from the distribution scipy's `ks_2samp(method="asymp")` uses: the one-sample
statistic's exact distribution (`scipy.stats.kstwo`) at the effective size `round(n·m/(n+m))`
(Hodges 1958). `kstwo.sf` costs up to milliseconds, so the alert rule compares `D` with a cached
critical value instead, equivalent because the survival function decreases in `D`.

>>> round(float(ks_statistic(np.array([5, 5, 0]), np.array([0, 5, 5]))), 3)
0.5
>>> ks_statistic(np.array([[1, 1], [2, 0]]), np.array([[1, 1], [0, 2]])).tolist()
[0.0, 1.0]
>>> bool(ks_p_value(0.5, 10_000, 10_000) < 1e-100), round(ks_critical(0.05, 10_000, 10_000), 4)
(True, 0.0192)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats


def cdf(counts: np.ndarray) -> np.ndarray:
    """Empirical CDF at each bin's upper edge (last axis)."""
    counts = np.asarray(counts, dtype=np.float64)
    cumulative = np.cumsum(counts, axis=-1)
    return cumulative / cumulative[..., -1:]


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    return ks_of_cdfs(cdf(reference), cdf(current))


def ks_of_cdfs(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """KS statistic from `cdf`s (a reference's can then be computed once)."""
    return np.abs(reference - current).max(axis=-1)


def effective_size(n: int, m: int) -> int:
    return max(1, round(n * m / (n + m)))


def ks_p_value(statistic: float, n: int, m: int) -> float:
    return float(stats.kstwo.sf(statistic, effective_size(n, m)))


@lru_cache(maxsize=4096)
def ks_critical(alpha: float, n: int, m: int) -> float:
    """The `D` above which the p-value is below `alpha`."""
    return float(stats.kstwo.isf(alpha, effective_size(n, m)))
