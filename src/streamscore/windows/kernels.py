"""Compiled kernels behind `RollingMedians`: per-user blocked sorted lists and one time heap.

Values are stored as int32 *keys*: the float32 score's bits mapped so that integer order is the
float total order (NaN included), which makes comparisons exact and cheap.

Each user slot keeps its keys as a sorted list of sorted blocks, `sortedcontainers.SortedList`
style, flattened into one array: a block holds at most `BLOCK` keys and lives at offset
`phys * BLOCK`; the slot's `meta` row per block, in value order, is `(phys, count, last key)`.
Insert and delete find their block by a binary search over `meta` (compact, so it stays in
cache) and shift at most `BLOCK` keys; a full block splits in two, and a block that becomes
small merges with a neighbour, so blocks stay at least a quarter full on average. The k-th key
is a scan of block counts. A user holding up to `BLOCK` keys has a single block whose array grows
by doubling, like a plain sorted array, so small users pay no block overhead.

Expiry is global, because the window's lower edge is: one 4-ary min-heap over every live event
holds `(timestamp, slot, key)`, so out-of-order timestamps cost a heap push (usually O(1): they
are mostly in order), and expiring pops what fell below the cutoff and deletes each key from
its user's blocks. A slot left empty gets the shared empty arrays back, so an emptied user keeps
no capacity.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import List

BLOCK = 1024
MIN_CAPACITY = 8
META = 3  # per block: physical index, count, last key

I32Array = types.int32[::1]


def new_lists() -> tuple[List, List]:
    """(keys, meta) per slot."""
    return List.empty_list(I32Array), List.empty_list(I32Array)


def to_keys(scores: np.ndarray) -> np.ndarray:
    """float32 scores -> int32 keys whose integer order is the floats' total order."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32)
    return bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))


@njit(cache=True)
def add_slots(keys_l, meta_l, empty, count):  # type: ignore[no-untyped-def]
    for _ in range(count):
        keys_l.append(empty)
        meta_l.append(empty)


@njit(cache=True, nogil=True)
def _find_block(meta, n_blocks, key):  # type: ignore[no-untyped-def]
    """First block whose last key is >= key (the last block if none)."""
    lo = 0
    hi = n_blocks - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if meta[META * mid + 2] >= key:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True)
def insert_many(
    keys_l, meta_l, size, blocks, heap_ts, heap_slot, heap_key, heap_n, slots, ts, keys
):  # type: ignore[no-untyped-def]
    """Insert events into their slots and the time heap; the heap must have room for them all.

    Returns the new heap size.
    """
    n = heap_n
    for i in range(slots.shape[0]):
        _insert_key(keys_l, meta_l, size, blocks, slots[i], keys[i])
        _heap_push(heap_ts, heap_slot, heap_key, n, ts[i], slots[i], keys[i])
        n += 1
    return n


@njit(cache=True, nogil=True)
def _insert_key(keys_l, meta_l, size, blocks, s, key):  # type: ignore[no-untyped-def]
    if size[s] == 0:
        keys_l[s] = np.empty(MIN_CAPACITY, dtype=np.int32)
        meta = np.empty(META * 2, dtype=np.int32)
        meta[0] = 0
        meta[1] = 0
        meta[2] = key
        meta_l[s] = meta
        blocks[s] = 1
    meta = meta_l[s]
    arr = keys_l[s]
    nb = blocks[s]
    b = _find_block(meta, nb, key)
    count = meta[META * b + 1]
    if count == BLOCK:
        # Split: the upper half moves to a new physical block, which is always index nb.
        if arr.shape[0] < (nb + 1) * BLOCK:
            grown = np.empty(max(2 * nb, nb + 1) * BLOCK, dtype=np.int32)
            grown[: nb * BLOCK] = arr[: nb * BLOCK]
            keys_l[s] = grown
            arr = grown
        if meta.shape[0] < META * (nb + 1):
            grown_meta = np.empty(META * 2 * nb, dtype=np.int32)
            grown_meta[: META * nb] = meta[: META * nb]
            meta_l[s] = grown_meta
            meta = grown_meta
        half = BLOCK // 2
        base = meta[META * b] * BLOCK
        arr[nb * BLOCK : nb * BLOCK + half] = arr[base + half : base + BLOCK]
        for j in range(META * nb - 1, META * (b + 1) - 1, -1):
            meta[j + META] = meta[j]
        meta[META * b + 1] = half
        meta[META * b + 2] = arr[base + half - 1]
        meta[META * (b + 1)] = nb
        meta[META * (b + 1) + 1] = half
        meta[META * (b + 1) + 2] = arr[nb * BLOCK + half - 1]
        nb += 1
        blocks[s] = nb
        if key >= arr[nb * BLOCK - BLOCK]:
            b += 1
        count = half
    elif nb == 1 and count == arr.shape[0]:
        grown = np.empty(min(BLOCK, 2 * count), dtype=np.int32)
        grown[:count] = arr[:count]
        keys_l[s] = grown
        arr = grown
    base = meta[META * b] * BLOCK
    pos = base + np.searchsorted(arr[base : base + count], key)
    for k in range(base + count, pos, -1):
        arr[k] = arr[k - 1]
    arr[pos] = key
    meta[META * b + 1] = count + 1
    meta[META * b + 2] = arr[base + count]
    size[s] += 1


@njit(cache=True, nogil=True)
def _delete_key(keys_l, meta_l, size, blocks, empty, s, key):  # type: ignore[no-untyped-def]
    """Remove one copy of `key`; returns True when the slot is left empty."""
    meta = meta_l[s]
    arr = keys_l[s]
    nb = blocks[s]
    b = _find_block(meta, nb, key)
    base = meta[META * b] * BLOCK
    count = meta[META * b + 1]
    pos = base + np.searchsorted(arr[base : base + count], key)
    for k in range(pos, base + count - 1):
        arr[k] = arr[k + 1]
    count -= 1
    meta[META * b + 1] = count
    size[s] -= 1
    if size[s] == 0:
        keys_l[s] = empty
        meta_l[s] = empty
        blocks[s] = 0
        return True
    if count == 0:
        _drop_block(arr, meta, blocks, s, b)
    else:
        meta[META * b + 2] = arr[base + count - 1]
        if b + 1 < nb and count + meta[META * (b + 1) + 1] <= BLOCK // 2:
            _merge_next(arr, meta, blocks, s, b)
        elif b > 0 and meta[META * (b - 1) + 1] + count <= BLOCK // 2:
            _merge_next(arr, meta, blocks, s, b - 1)
    _shrink(keys_l, meta_l, blocks, s)
    return False


@njit(cache=True, nogil=True)
def _merge_next(arr, meta, blocks, s, b):  # type: ignore[no-untyped-def]
    base = meta[META * b] * BLOCK
    count = meta[META * b + 1]
    nbase = meta[META * (b + 1)] * BLOCK
    ncount = meta[META * (b + 1) + 1]
    arr[base + count : base + count + ncount] = arr[nbase : nbase + ncount]
    meta[META * b + 1] = count + ncount
    meta[META * b + 2] = arr[base + count + ncount - 1]
    _drop_block(arr, meta, blocks, s, b + 1)


@njit(cache=True, nogil=True)
def _drop_block(arr, meta, blocks, s, b):  # type: ignore[no-untyped-def]
    """Remove logical block b; the last physical block moves into its place to stay dense."""
    nb = blocks[s]
    phys = meta[META * b]
    for j in range(META * b, META * (nb - 1)):
        meta[j] = meta[j + META]
    nb -= 1
    blocks[s] = nb
    if phys != nb:
        for j in range(nb):
            if meta[META * j] == nb:
                count = meta[META * j + 1]
                arr[phys * BLOCK : phys * BLOCK + count] = arr[nb * BLOCK : nb * BLOCK + count]
                meta[META * j] = phys
                break


@njit(cache=True, nogil=True)
def _shrink(keys_l, meta_l, blocks, s):  # type: ignore[no-untyped-def]
    """Halve a slot's arrays once it uses under a quarter of them, so bursts do not pin memory."""
    arr = keys_l[s]
    meta = meta_l[s]
    nb = blocks[s]
    used = meta[1] if nb == 1 else nb * BLOCK
    if arr.shape[0] > MIN_CAPACITY and 4 * used < arr.shape[0]:
        smaller = np.empty(max(MIN_CAPACITY, arr.shape[0] // 2), dtype=np.int32)
        smaller[:used] = arr[:used]
        keys_l[s] = smaller
    if meta.shape[0] > 2 * META and 4 * nb * META < meta.shape[0]:
        smaller_meta = np.empty(meta.shape[0] // 2, dtype=np.int32)
        smaller_meta[: META * nb] = meta[: META * nb]
        meta_l[s] = smaller_meta


@njit(cache=True, nogil=True)
def _heap_push(heap_ts, heap_slot, heap_key, n, t, s, key):  # type: ignore[no-untyped-def]
    i = n
    while i > 0:
        parent = (i - 1) // 4
        if heap_ts[parent] <= t:
            break
        heap_ts[i] = heap_ts[parent]
        heap_slot[i] = heap_slot[parent]
        heap_key[i] = heap_key[parent]
        i = parent
    heap_ts[i] = t
    heap_slot[i] = s
    heap_key[i] = key


@njit(cache=True, nogil=True)
def _heap_pop(heap_ts, heap_slot, heap_key, n):  # type: ignore[no-untyped-def]
    """Remove the root of a heap of n entries (n - 1 remain)."""
    n -= 1
    t = heap_ts[n]
    s = heap_slot[n]
    key = heap_key[n]
    i = 0
    while True:
        first = 4 * i + 1
        if first >= n:
            break
        best = first
        for c in range(first + 1, min(first + 4, n)):
            if heap_ts[c] < heap_ts[best]:
                best = c
        if heap_ts[best] >= t:
            break
        heap_ts[i] = heap_ts[best]
        heap_slot[i] = heap_slot[best]
        heap_key[i] = heap_key[best]
        i = best
    heap_ts[i] = t
    heap_slot[i] = s
    heap_key[i] = key


@njit(cache=True, nogil=True)
def expire(keys_l, meta_l, size, blocks, empty, heap_ts, heap_slot, heap_key, heap_n, cutoff):  # type: ignore[no-untyped-def]
    """Drop every event older than `cutoff`; returns (new heap size, slots left empty)."""
    n = heap_n
    emptied = np.empty(16, dtype=np.int64)
    n_emptied = 0
    while n > 0 and heap_ts[0] < cutoff:
        s = heap_slot[0]
        key = heap_key[0]
        _heap_pop(heap_ts, heap_slot, heap_key, n)
        n -= 1
        if _delete_key(keys_l, meta_l, size, blocks, empty, s, key):
            if n_emptied == emptied.shape[0]:
                grown = np.empty(2 * n_emptied, dtype=np.int64)
                grown[:n_emptied] = emptied
                emptied = grown
            emptied[n_emptied] = s
            n_emptied += 1
    return n, emptied[:n_emptied]


@njit(cache=True, nogil=True)
def _kth(arr, meta, nb, k):  # type: ignore[no-untyped-def]
    for b in range(nb):
        count = meta[META * b + 1]
        if k < count:
            return arr[meta[META * b] * BLOCK + k]
        k -= count
    return arr[0]  # unreachable for 0 <= k < size


@njit(cache=True, nogil=True)
def _key_value(key):  # type: ignore[no-untyped-def]
    bits = np.empty(1, dtype=np.int32)
    bits[0] = key ^ ((key >> 31) & 0x7FFFFFFF)
    return np.float64(bits.view(np.float32)[0])


@njit(cache=True, nogil=True)
def median_of(keys_l, meta_l, size, blocks, s):  # type: ignore[no-untyped-def]
    """Mean of the two middle values (one when the count is odd); NaN for an empty slot."""
    n = size[s]
    if n == 0:
        return np.nan
    arr = keys_l[s]
    meta = meta_l[s]
    nb = blocks[s]
    lo = _key_value(_kth(arr, meta, nb, (n - 1) // 2))
    hi = _key_value(_kth(arr, meta, nb, n // 2))
    return (lo + hi) / 2.0


@njit(cache=True, nogil=True)
def all_medians(keys_l, meta_l, size, blocks, n_slots):  # type: ignore[no-untyped-def]
    out = np.empty(n_slots, dtype=np.float64)
    for s in range(n_slots):
        out[s] = median_of(keys_l, meta_l, size, blocks, s)
    return out


@njit(cache=True, nogil=True)
def capacity_bytes(keys_l, meta_l, n_slots):  # type: ignore[no-untyped-def]
    total = 0
    for s in range(n_slots):
        total += 4 * (keys_l[s].shape[0] + meta_l[s].shape[0])
    return total
