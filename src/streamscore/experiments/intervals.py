"""Wilson score interval for one variant's conversion rate.

Wilson (1927), "Probable inference, the law of succession, and statistical inference", JASA 22:
the set of rates ``p`` whose score test ``|p_hat - p| / sqrt(p (1 - p) / n) <= z`` accepts,

    centre = (p_hat + z^2 / 2n) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p_hat (1 - p_hat) / n + z^2 / 4n^2)

Unlike the Wald interval it stays inside [0, 1] and keeps its coverage near 0 and 1, where
conversion rates live (Brown, Cai, DasGupta 2001, "Interval estimation for a binomial
proportion", Statistical Science 16). It is a fixed-sample interval: the always-valid one is
the difference's confidence sequence in `sequential`. Same as scipy's
``binomtest(k, n).proportion_ci(method="wilson")``, but vectorised and defined at n = 0.

>>> lo, hi = wilson_interval(np.array([10, 0]), np.array([100, 0]))
>>> lo.round(4).tolist(), hi.round(4).tolist()
([0.0552, 0.0], [0.1744, 1.0])
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri


def wilson_interval(
    successes: np.ndarray, trials: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Wilson interval (lower, upper); [0, 1] where there are no trials."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = ndtri(0.5 + confidence / 2)
    safe_n = np.maximum(n, 1.0)
    p = k / safe_n
    shrink = 1.0 + z * z / safe_n
    centre = (p + z * z / (2 * safe_n)) / shrink
    half = z / shrink * np.sqrt(p * (1 - p) / safe_n + z * z / (4 * safe_n * safe_n))
    empty = n == 0
    lower = np.where(empty, 0.0, np.clip(centre - half, 0.0, 1.0))
    upper = np.where(empty, 1.0, np.clip(centre + half, 0.0, 1.0))
    return lower, upper
