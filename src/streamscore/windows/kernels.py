"""Compiled kernels behind `RollingMedians`: per-user sorted arrays, updated in place.

Each user slot owns three arrays: timestamps in time order (`ts`), the scores in that same order
(`by_time`), and the scores sorted by value (`by_value`). The live part of the time-ordered pair
is `[head, head + size)`, so expiring the oldest events only moves `head`; `by_value[:size]`
always holds exactly the live scores, so the median is two array reads. Inserting shifts the
tail of each array , which is cheap for the hundreds to tens of thousands of events a
user holds in a window. `min_ts[slot]` (inf when empty) lets a sweep find expiring users with one
vectorised comparison instead of touching every slot.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import List

MIN_CAPACITY = 8

F64Array = types.float64[::1]
F32Array = types.float32[::1]


def new_lists() -> tuple[List, List, List]:
    return List.empty_list(F64Array), List.empty_list(F32Array), List.empty_list(F32Array)


@njit(cache=True)
def add_slots(ts_l, time_l, value_l, count):  # type: ignore[no-untyped-def]
    for _ in range(count):
        ts_l.append(np.empty(MIN_CAPACITY, dtype=np.float64))
        time_l.append(np.empty(MIN_CAPACITY, dtype=np.float32))
        value_l.append(np.empty(MIN_CAPACITY, dtype=np.float32))


@njit(cache=True, nogil=True)
def insert_many(ts_l, time_l, value_l, head, size, min_ts, slots, ts, scores):  # type: ignore[no-untyped-def]
    for i in range(slots.shape[0]):
        _insert(ts_l, time_l, value_l, head, size, min_ts, slots[i], ts[i], scores[i])


@njit(cache=True, nogil=True)
def _insert(ts_l, time_l, value_l, head, size, min_ts, s, t, score):  # type: ignore[no-untyped-def]
    n = size[s]
    h = head[s]
    tarr = ts_l[s]
    if h + n == tarr.shape[0]:
        cap = tarr.shape[0]
        new_cap = cap if 2 * n <= cap else 2 * cap
        new_ts = np.empty(new_cap, dtype=np.float64)
        new_time = np.empty(new_cap, dtype=np.float32)
        new_ts[:n] = tarr[h : h + n]
        new_time[:n] = time_l[s][h : h + n]
        ts_l[s] = new_ts
        time_l[s] = new_time
        tarr = new_ts
        h = 0
        head[s] = 0
    tvals = time_l[s]
    # Position after every equal timestamp; arrivals are mostly in order, so usually the end.
    pos = h + np.searchsorted(tarr[h : h + n], t, side="right")
    end = h + n
    for k in range(end, pos, -1):
        tarr[k] = tarr[k - 1]
        tvals[k] = tvals[k - 1]
    tarr[pos] = t
    tvals[pos] = score

    varr = value_l[s]
    if n == varr.shape[0]:
        grown = np.empty(2 * n, dtype=np.float32)
        grown[:n] = varr[:n]
        value_l[s] = grown
        varr = grown
    vpos = np.searchsorted(varr[:n], score)
    for k in range(n, vpos, -1):
        varr[k] = varr[k - 1]
    varr[vpos] = score
    size[s] = n + 1
    min_ts[s] = tarr[h]


@njit(cache=True, nogil=True)
def expire(ts_l, time_l, value_l, head, size, min_ts, candidates, cutoff):  # type: ignore[no-untyped-def]
    """Drop events older than `cutoff` from the candidate slots; returns the slots left empty."""
    emptied = np.empty(candidates.shape[0], dtype=np.int64)
    n_emptied = 0
    for j in range(candidates.shape[0]):
        s = candidates[j]
        n = size[s]
        h = head[s]
        tarr = ts_l[s]
        tvals = time_l[s]
        varr = value_l[s]
        while n > 0 and tarr[h] < cutoff:
            score = tvals[h]
            vpos = np.searchsorted(varr[:n], score)
            for k in range(vpos, n - 1):
                varr[k] = varr[k + 1]
            h += 1
            n -= 1
        if n == 0:
            h = 0
            min_ts[s] = np.inf
            emptied[n_emptied] = s
            n_emptied += 1
        else:
            min_ts[s] = tarr[h]
        size[s] = n
        head[s] = h
        _shrink(ts_l, time_l, value_l, head, size, s)
    return emptied[:n_emptied]


@njit(cache=True, nogil=True)
def _shrink(ts_l, time_l, value_l, head, size, s):  # type: ignore[no-untyped-def]
    """Halve a slot's arrays once it uses under a quarter of them, so bursts do not pin memory."""
    n = size[s]
    cap = ts_l[s].shape[0]
    if cap <= MIN_CAPACITY or 4 * n >= cap:
        return
    new_cap = max(MIN_CAPACITY, cap // 2)
    h = head[s]
    new_ts = np.empty(new_cap, dtype=np.float64)
    new_time = np.empty(new_cap, dtype=np.float32)
    new_value = np.empty(new_cap, dtype=np.float32)
    new_ts[:n] = ts_l[s][h : h + n]
    new_time[:n] = time_l[s][h : h + n]
    new_value[:n] = value_l[s][:n]
    ts_l[s] = new_ts
    time_l[s] = new_time
    value_l[s] = new_value
    head[s] = 0


@njit(cache=True, nogil=True)
def median_of(value_l, size, s):  # type: ignore[no-untyped-def]
    n = size[s]
    if n == 0:
        return np.nan
    varr = value_l[s]
    lo = np.float64(varr[(n - 1) // 2])
    hi = np.float64(varr[n // 2])
    return (lo + hi) / 2.0


@njit(cache=True, nogil=True)
def all_medians(value_l, size, n_slots):  # type: ignore[no-untyped-def]
    out = np.empty(n_slots, dtype=np.float64)
    for s in range(n_slots):
        out[s] = median_of(value_l, size, s)
    return out


@njit(cache=True, nogil=True)
def capacity_bytes(ts_l, time_l, value_l, n_slots):  # type: ignore[no-untyped-def]
    total = 0
    for s in range(n_slots):
        total += ts_l[s].shape[0] * 12 + value_l[s].shape[0] * 4
    return total
