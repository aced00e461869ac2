"""Event-time window bounds on a tile grid: which tile an event falls in, where a window starts.

A window of length `W` ending at stream time `T` is kept as whole tiles of `t = W/60` seconds
aligned to multiples of `t` (Tecton/Chronon tiling), so its exact bounds are
`[window_start, T]` with `window_start = t * floor((T - W) / t)`, hence
`T - W - t < window_start <= T - W`. Both bounds are reported with every value: the value is
exactly the aggregate over the user's events with timestamps inside them, both inclusive.

>>> tile_index(np.array([0.0, 4.999, 5.0, -0.5]), 5.0).tolist()
[0, 0, 1, -1]
>>> window_start(1000.0, 300.0), window_start(1003.0, 300.0)
(700.0, 700.0)
"""

from __future__ import annotations

import math

import numpy as np

TILES_PER_WINDOW = 60


def tile_index(timestamps: np.ndarray, tile: float) -> np.ndarray:
    """floor(ts / tile) corrected so that `k * tile <= ts < (k + 1) * tile` holds exactly."""
    k = np.floor(timestamps / tile)
    k -= k * tile > timestamps
    k += (k + 1) * tile <= timestamps
    return k.astype(np.int64)


def first_tile(time: float, window: float, tile: float) -> int:
    """Index of the oldest tile still inside the window ending at `time` (`tile_index` on one
    float: the same float64 arithmetic, without an array per read).

    >>> first_tile(1000.0, 300.0, 5.0), first_tile(1004.999, 300.0, 5.0)
    (140, 140)
    """
    x = time - window
    k = math.floor(x / tile)
    if k * tile > x:
        k -= 1
    if (k + 1) * tile <= x:
        k += 1
    return k


def window_start(time: float, window: float) -> float:
    tile = window / TILES_PER_WINDOW
    return first_tile(time, window, tile) * tile
