"""Quantile bins fitted once on a reference sample, so binning a new value costs one binary search.

Bin `i` is `[edges[i-1], edges[i])`, the first and last bins open-ended, so values outside the
reference's range still land somewhere. Interior edges are the reference's `j / n_bins`
quantiles, merged where they coincide. An edge the reference holds at least half a bin's worth of
times (a tie: a constant column, a discrete input; any value holding more than a bin's worth is
an edge) gets a bin of its own, `[v, nextafter(v))`, so a constant column can still show a move
up as well as down: without it, `v` and everything above `v` would share a bin.

>>> bins = QuantileBins.fit(np.arange(100.0), n_bins=4)
>>> bins.edges.tolist(), bins.reference.tolist()
([24.75, 49.5, 74.25], [25, 25, 25, 25])
>>> bins.index(np.array([-5.0, 24.75, 50.0, 1e9])).tolist()
[0, 1, 2, 3]
>>> constant = QuantileBins.fit(np.full(10, 3.0), n_bins=4)
>>> constant.index(np.array([2.0, 3.0, 4.0])).tolist(), constant.reference.tolist()
([0, 1, 2], [0, 10, 0])

K columns binned at once, each by its own edges (padded with +inf to a common width), in one
compiled pass rather than K `searchsorted` calls (a few ns per value and column):

>>> edges = np.array([[24.75, 49.5, 74.25], [3.0, np.nextafter(3.0, np.inf), np.inf]])
>>> index_columns(np.array([[50.0, 2.0], [1e9, 3.0], [0.0, 4.0]]), edges).tolist()
[[2, 0], [3, 1], [0, 2]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True, slots=True)
class QuantileBins:
    edges: np.ndarray  # float64 [B-1], strictly increasing
    representatives: np.ndarray  # float64 [B], non-decreasing: where a bin's mass sits
    reference: np.ndarray  # int64 [B], the reference sample's count per bin

    @property
    def size(self) -> int:
        return len(self.representatives)

    @classmethod
    def fit(cls, sample: np.ndarray, n_bins: int = 20) -> QuantileBins:
        """Bins from the `n_bins`-quantiles of a finite, non-empty sample (at most 2·n_bins-1 bins)."""
        if n_bins < 2:
            raise ValueError("n_bins must be at least 2")
        x = np.sort(np.asarray(sample, dtype=np.float64).ravel())
        if x.size == 0 or not np.isfinite(x).all():
            raise ValueError("the reference sample must be non-empty and finite")
        edges = np.unique(np.quantile(x, np.arange(1, n_bins) / n_bins))
        ties = np.searchsorted(x, edges, "right") - np.searchsorted(x, edges, "left")
        atoms = edges[2 * n_bins * ties >= x.size]
        edges = np.unique(np.concatenate([edges, np.nextafter(atoms, np.inf)]))
        where = np.searchsorted(edges, x, "right")
        counts = np.bincount(where, minlength=len(edges) + 1)
        sums = np.bincount(where, weights=x, minlength=len(edges) + 1)
        # An empty bin's mass (only ever the current window's) sits at its middle, or at its one
        # finite edge for the open-ended bins.
        bounds = np.concatenate([edges[:1], edges, edges[-1:]])
        middles = (bounds[:-1] + bounds[1:]) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            representatives = np.where(counts > 0, sums / counts, middles)
        # Means of equal values can differ in the last bit; the order is what Wasserstein needs.
        representatives = np.maximum.accumulate(representatives)
        return cls(edges, representatives, counts.astype(np.int64))

    def index(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value (int64, same shape)."""
        return np.searchsorted(self.edges, values, "right")


def index_columns(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index (int16 [N, K]) of each of K columns of finite values; row k of `edges` [K, E] is
    column k's `QuantileBins.edges` padded with +inf (never at or below a finite value)."""
    index = np.empty(values.shape, dtype=np.int16)
    _index_columns(np.ascontiguousarray(values, dtype=np.float64), edges, index)
    return index


@njit(cache=True, nogil=True)
def _index_columns(values, edges, index):  # type: ignore[no-untyped-def]
    # Counting every edge at or below x, rather than a binary search: branch-free, so it
    # vectorises, and ~5x faster on fresh data for 20 bins (38 edges), where the searches'
    # branches are mispredicted.
    n, columns = values.shape
    for i in range(n):
        for c in range(columns):
            x = values[i, c]
            below = 0
            for j in range(edges.shape[1]):
                below += edges[c, j] <= x
            index[i, c] = below
