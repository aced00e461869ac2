"""Wasserstein-1 (earth mover's) distance between two binned distributions, in the value's units.

Each bin's mass sits at its representative (the mean of the reference values in it), so the
distance is `Σ |F_ref - F_cur| · (r[i+1] - r[i])` over consecutive representatives: exactly
`scipy.stats.wasserstein_distance` on the representatives weighted by the two sets of counts.
It approximates the distance between the unbinned distributions: moves within a bin are not
seen, and mass beyond the reference's range sits at the outer bins' means, so a shift reads
slightly short (0.48 for a 0.5 shift of a standard normal, 20 bins, 10,000 events a side).

>>> float(wasserstein(np.array([1, 0, 0]), np.array([0, 0, 1]), np.array([0.0, 1.0, 3.0])))
3.0
"""

from __future__ import annotations

import numpy as np

from streamscore.drift.ks import cdf


def wasserstein(
    reference: np.ndarray, current: np.ndarray, representatives: np.ndarray
) -> np.ndarray:
    gaps = np.diff(representatives, axis=-1)
    return (np.abs(cdf(reference) - cdf(current))[..., :-1] * gaps).sum(axis=-1)
