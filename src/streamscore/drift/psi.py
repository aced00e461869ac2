"""Population stability index between two binned distributions (Siddiqi 2006, *Credit Risk
Scorecards*, ch. 8): `PSI = Σ (q - p) · ln(q / p)` over bins, p the reference's proportions and
q the current's. It is the symmetrised Kullback-Leibler divergence (Jeffreys'), so ≥ 0 and 0 only
for equal distributions. The customary reading: < 0.1 stable, 0.1-0.2 moderate, > 0.2 a shift.

An empty bin would make a term infinite, so proportions below `EPSILON` (one event in 10,000, the
default window) are raised to it. A bin empty on one side then adds `(p - EPSILON)·ln(p / EPSILON)`:
for a 5 % bin, 0.31, a shift on its own, as it should be; a bin empty on both sides adds 0, so
padding counts with empty bins changes nothing.

Works on the last axis, so K values' counts `[K, B]` give K indices at once.

>>> round(float(psi(np.array([50, 50]), np.array([50, 50]))), 6)
0.0
>>> round(float(psi(np.array([50, 50]), np.array([70, 30]))), 4)  # 0.2·ln 1.4 + 0.2·ln(5/3)
0.1695
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-4


def proportions(counts: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """Each bin's share of the total, at least `epsilon` (all `epsilon` if the total is 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = np.maximum(counts.sum(axis=-1, keepdims=True), np.finfo(np.float64).tiny)
    return np.maximum(counts / total, epsilon)


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    return psi_of_proportions(proportions(reference, epsilon), proportions(current, epsilon))


def psi_of_proportions(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """PSI from `proportions` (a reference's can then be computed once)."""
    return ((q - p) * np.log(q / p)).sum(axis=-1)
