"""Per-user sorted runs of keyed rows in one shared arena, updated by compiled kernels.

Every user's rows (tiles, raw values, per-value last-seen times, sessions) live in a slice
`[start, start + length)` of one arena whose row is `[key, values...]`, instead of per-user
objects: a few dozen bytes per row plus 16 bytes per user and series, no per-event Python
object. `keys`/`vals` and `start`/`length`/`cap`/`base` are views of two interleaved arrays, so
an update touches one cache line for the user and one for the row.

A slice owns the region `[base, start + cap)`. Expiry drops a prefix by moving `start` on; when
the slice is full, its rows slide back to `base` if that frees at least half their number (a
sliding window's steady state: at most two row copies per row added, and the arena does not
grow), and otherwise move to the arena's top with 1.5x room. Compaction (once regions left
behind outweigh half the held ones, or the rows fill under a third of their room) packs the
slices end to end, each keeping room for half its rows more, so that they do not all move to
the top again at once. Moving every full slice to the top, and compacting without room, made
the top advance about three rows per event added: at 33k events/s over 10k users, ~28 arena
growths or compactions a second, up to 190 ms each, held the commit step (and the feature
lock) 6 s of every 15. Only non-empty rows exist, so an idle user costs 16 bytes per series.

>>> runs = Runs(columns=1)
>>> runs.insert(np.array([0, 0, 1]), np.array([7.0, 3.0, 3.0]), np.ones((3, 1)), SUM_OPS)
>>> runs.rows(0)
([3.0, 7.0], [[1.0], [1.0]])
>>> runs.aggregate(np.array([0, 1, 2]), lowest=5.0, ops=SUM_OPS)[:, 0].tolist()
[1.0, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np
from numba import njit

SUM, MIN, MAX = 0, 1, 2
IDENTITY = np.array([0.0, np.inf, -np.inf])
SUM_OPS = np.array([SUM], dtype=np.int8)
SEGMENT = 4  # per user slot: start, length, cap, base


@njit(cache=True, nogil=True)
def _combine(op, a, b):  # type: ignore[no-untyped-def]
    """`a` and `b` combined by a column's op: SUM, MIN or MAX."""
    if op == SUM:
        return a + b
    if op == MIN:
        return min(a, b)
    return max(a, b)


@njit(cache=True, nogil=True)
def _make_room(keys, vals, start, length, cap, base, meta, u):  # type: ignore[no-untyped-def]
    """Ensure user u's slice has a free row: slide it back into its region if expiry freed
    enough there, else move it to the top; False when the arena is full."""
    m = length[u]
    if m < cap[u]:
        return True
    s = start[u]
    hole = s - base[u]
    if hole >= max(2, m // 2):
        b = base[u]
        for j in range(m):  # forwards: the target lies before the source
            keys[b + j] = keys[s + j]
            for c in range(vals.shape[1]):
                vals[b + j, c] = vals[s + j, c]
        start[u] = b
        cap[u] += hole
        return True
    new_cap = cap[u] + max(2, cap[u] // 2)
    top = meta[0]
    if top + new_cap > keys.shape[0]:
        return False
    for j in range(m):
        keys[top + j] = keys[s + j]
        for c in range(vals.shape[1]):
            vals[top + j, c] = vals[s + j, c]
    start[u] = top
    base[u] = top
    cap[u] = new_cap
    meta[0] = top + new_cap
    return True


@njit(cache=True, nogil=True)
def _after(keys, s, m, k):  # type: ignore[no-untyped-def]
    """First position in the slice whose key is > k, scanning back from the end (late is rare)."""
    pos = s + m
    while pos > s and keys[pos - 1] > k:
        pos -= 1
    return pos


@njit(cache=True, nogil=True)
def _insert_at(keys, vals, start, length, pos, u):  # type: ignore[no-untyped-def]
    s = start[u]
    for j in range(s + length[u], pos, -1):
        keys[j] = keys[j - 1]
        for c in range(vals.shape[1]):
            vals[j, c] = vals[j - 1, c]
    length[u] += 1


@njit(cache=True, nogil=True)
def insert_rows(
    keys, vals, start, length, cap, base, meta, slots, ekeys, evals, ops, merge, lowest, i0
):  # type: ignore[no-untyped-def]
    """Add rows from event i0 on; rows with an equal key combine (`merge`) or stay apart.

    Returns the first event not done (the arena filled up; the caller grows it and goes on).
    """
    n = slots.shape[0]
    for i in range(i0, n):
        k = ekeys[i]
        if k < lowest:
            continue
        u = slots[i]
        pos = _after(keys, start[u], length[u], k)
        if merge and pos > start[u] and keys[pos - 1] == k:
            p = pos - 1
            for c in range(ops.shape[0]):
                vals[p, c] = _combine(ops[c], vals[p, c], evals[i, c])
            continue
        if length[u] == cap[u]:
            offset = pos - start[u]
            if not _make_room(keys, vals, start, length, cap, base, meta, u):
                return i
            pos = start[u] + offset
        _insert_at(keys, vals, start, length, pos, u)
        keys[pos] = k
        for c in range(vals.shape[1]):
            vals[pos, c] = evals[i, c]
    return n


@njit(cache=True, nogil=True)
def insert_sessions(keys, vals, start, length, cap, base, meta, slots, ts, gap, i0):  # type: ignore[no-untyped-def]
    """Sessions as rows (key=start, end, events): an event joins, bridges or opens sessions."""
    n = slots.shape[0]
    for i in range(i0, n):
        u = slots[i]
        if not _make_room(keys, vals, start, length, cap, base, meta, u):
            return i
        t = ts[i]
        s = start[u]
        m = length[u]
        nxt = _after(keys, s, m, t)
        prev = nxt - 1
        # Every gap compared as a difference, `later - earlier <= gap`, as the definition reads:
        # `t <= end + gap` rounds differently (8192.2 <= 7592.2 + 600, but 8192.2 - 7592.2 > 600).
        if prev >= s and t - vals[prev, 0] <= gap:
            vals[prev, 0] = max(vals[prev, 0], t)
            vals[prev, 1] += 1.0
            if nxt < s + m and keys[nxt] - vals[prev, 0] <= gap:
                vals[prev, 0] = max(vals[prev, 0], vals[nxt, 0])
                vals[prev, 1] += vals[nxt, 1]
                for j in range(nxt, s + m - 1):
                    keys[j] = keys[j + 1]
                    vals[j, 0] = vals[j + 1, 0]
                    vals[j, 1] = vals[j + 1, 1]
                length[u] -= 1
        elif nxt < s + m and keys[nxt] - t <= gap:
            keys[nxt] = t
            vals[nxt, 1] += 1.0
        else:
            _insert_at(keys, vals, start, length, nxt, u)
            keys[nxt] = t
            vals[nxt, 0] = t
            vals[nxt, 1] = 1.0
    return n


@njit(cache=True, nogil=True)
def drop_below(keys, vals, start, length, cap, column, lowest, ordered):  # type: ignore[no-untyped-def]
    """Drop every row whose key (column < 0) or vals[:, column] is below `lowest`.

    `ordered`: that quantity grows along each slice, so the dropped rows are a prefix and the
    slice just starts later, without copying rows (`_make_room` reuses the room it leaves).
    """
    for u in range(start.shape[0]):
        s = start[u]
        m = length[u]
        if ordered:
            d = 0
            while d < m and (keys[s + d] if column < 0 else vals[s + d, column]) < lowest:
                d += 1
            start[u] = s + d
            length[u] = m - d
            cap[u] -= d
            continue
        kept = 0
        for j in range(s, s + m):
            v = keys[j] if column < 0 else vals[j, column]
            if v >= lowest:
                keys[s + kept] = keys[j]
                for c in range(vals.shape[1]):
                    vals[s + kept, c] = vals[j, c]
                kept += 1
        length[u] = kept


@njit(cache=True, nogil=True)
def _compact(rows, start, length, caps, new_rows):  # type: ignore[no-untyped-def]
    """Each slice's rows end to end into `new_rows`, each followed by room up to `caps`: one
    block copy per slice (row by row, a 4M-row arena took 400 ms)."""
    top = 0
    for u in range(start.shape[0]):
        s = start[u]
        m = length[u]
        new_rows[top : top + m, :] = rows[s : s + m, :]
        start[u] = top
        top += caps[u]
    return top


# The readers below take each output row's rows as the arena range [begin[r], end[r]).


@njit(cache=True, nogil=True)
def _aggregate(keys, vals, begin, end, lowest, ops, out):  # type: ignore[no-untyped-def]
    for r in range(begin.shape[0]):
        for j in range(begin[r], end[r]):
            if keys[j] >= lowest:
                for c in range(ops.shape[0]):
                    out[r, c] = _combine(ops[c], out[r, c], vals[j, c])


@njit(cache=True, nogil=True)
def _medians(keys, vals, begin, end, lowest, out):  # type: ignore[no-untyped-def]
    for r in range(begin.shape[0]):
        first = begin[r] + np.searchsorted(keys[begin[r] : end[r]], lowest)
        if first < end[r]:
            out[r] = np.median(vals[first : end[r], 0])


@njit(cache=True, nogil=True)
def _count_at_least(vals, begin, end, column, lowest, out):  # type: ignore[no-untyped-def]
    for r in range(begin.shape[0]):
        for j in range(begin[r], end[r]):
            if vals[j, column] >= lowest:
                out[r] += 1.0


class Runs:
    """A keyed, sorted run of rows per user slot, all users sharing one arena."""

    def __init__(self, columns: int, capacity: int = 1024) -> None:
        self._use_rows(np.zeros((capacity, 1 + columns), dtype=np.float64))
        self._use_segments(np.zeros((0, SEGMENT), dtype=np.int32))
        self.meta = np.zeros(1, dtype=np.int64)  # [top of the arena]

    def _use_rows(self, rows: np.ndarray) -> None:
        self._rows = rows
        self.keys, self.vals = rows[:, 0], rows[:, 1:]

    def _use_segments(self, segments: np.ndarray) -> None:
        self._segments = segments
        self.start, self.length, self.cap = segments[:, 0], segments[:, 1], segments[:, 2]
        self.base = segments[:, 3]

    @property
    def rows_live(self) -> int:
        return int(self.length.sum())

    @property
    def rows_held(self) -> int:
        """Rows the slices' regions span, their room included; the rest up to the top is
        regions left behind by slices that moved."""
        return int((self.start.astype(np.int64) + self.cap - self.base).sum())

    def ensure_slots(self, slots: int) -> None:
        grow = slots - len(self.start)
        if grow > 0:
            extra = max(grow, len(self.start))
            self._use_segments(
                np.concatenate([self._segments, np.zeros((extra, SEGMENT), np.int32)])
            )

    def insert(
        self,
        slots: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray,
        ops: np.ndarray,
        merge: bool = True,
        lowest: float = -np.inf,
    ) -> None:
        """Rows `(key, values)` for users `slots`, in arrival order; keys below `lowest` skipped."""
        self.ensure_slots(int(slots.max(initial=0)) + 1)
        done = 0
        while done < len(slots):
            done = insert_rows(
                self.keys, self.vals, self.start, self.length, self.cap, self.base, self.meta,
                slots, keys, values, ops, merge, lowest, done,
            )  # fmt: skip
            if done < len(slots):
                self._grow()

    def insert_sessions(self, slots: np.ndarray, timestamps: np.ndarray, gap: float) -> None:
        self.ensure_slots(int(slots.max(initial=0)) + 1)
        done = 0
        while done < len(slots):
            done = insert_sessions(
                self.keys, self.vals, self.start, self.length, self.cap, self.base, self.meta,
                slots, timestamps, gap, done,
            )  # fmt: skip
            if done < len(slots):
                self._grow()

    def drop_below(self, lowest: float, column: int = -1, ordered: bool = True) -> None:
        drop_below(self.keys, self.vals, self.start, self.length, self.cap, column, lowest, ordered)
        top, held = int(self.meta[0]), self.rows_held
        # Regions left behind, or room far beyond the rows (the users' windows emptied). Not
        # a sliding window's steady state: its slices keep reusing their regions.
        if top > 4096 and (2 * (top - held) > held or held > 3 * self.rows_live):
            self.compact(room=True)

    def compact(self, room: bool = False) -> None:
        """Rewrite every slice end to end: with no room to spare (checkpoints, memory
        measurements), or (`room`) each with room for up to half its rows more, so that the
        slices do not all move to the top again at their next rows."""
        caps = self.length.astype(np.int64)
        if room:
            caps = np.minimum(self.cap, caps + np.maximum(2, caps // 2))
        rows = np.zeros((max(int(caps.sum()), 16), self._rows.shape[1]), dtype=np.float64)
        self.meta[0] = _compact(self._rows, self.start, self.length, caps, rows)
        self.cap[:] = caps
        self.base[:] = self.start
        self._use_rows(rows)

    def aggregate(self, slots: np.ndarray, lowest: float, ops: np.ndarray) -> np.ndarray:
        """Per slot, the rows with key >= lowest combined by `ops` (identity where none/-1)."""
        out = np.tile(IDENTITY[ops], (len(slots), 1))
        _aggregate(self.keys, self.vals, *self._spans(slots), lowest, ops, out)
        return out

    def medians(self, slots: np.ndarray, lowest: float) -> np.ndarray:
        """Median of column 0 over rows with key >= lowest; NaN where there are none."""
        out = np.full(len(slots), np.nan)
        _medians(self.keys, self.vals, *self._spans(slots), lowest, out)
        return out

    def count_at_least(self, slots: np.ndarray, lowest: float, column: int = 0) -> np.ndarray:
        out = np.zeros(len(slots))
        _count_at_least(self.vals, *self._spans(slots), column, lowest, out)
        return out

    def _spans(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per slot, the arena range [begin, end) of its rows; empty for -1 (no slot)."""
        self.ensure_slots(int(slots.max(initial=0)) + 1)
        safe = np.maximum(slots, 0)
        begin = self.start[safe].astype(np.int64)
        return begin, np.where(slots >= 0, begin + self.length[safe], begin)

    def last_row(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(has rows, values of the highest-keyed row) per slot (-1 = no slot)."""
        self.ensure_slots(int(slots.max(initial=0)) + 1)
        safe = np.maximum(slots, 0)
        has = (slots >= 0) & (self.length[safe] > 0)
        idx = np.where(has, self.start[safe] + self.length[safe] - 1, 0)
        return has, self.vals[idx] if len(self.vals) else np.zeros((len(slots), 0))

    def take(self, slots: np.ndarray) -> Runs:
        """A copy holding only the rows of `slots` (-1: none), renumbered 0..len(slots)-1."""
        safe = np.maximum(slots, 0)
        self.ensure_slots(int(safe.max(initial=0)) + 1)
        lengths = np.where(slots >= 0, self.length[safe], 0).astype(np.int64)
        starts = np.cumsum(lengths) - lengths
        total = int(lengths.sum())
        # Row j of slot k sits at start[slot] + j in the arena, at starts[k] + j in the copy.
        offsets = np.arange(total) - np.repeat(starts, lengths)
        source = np.repeat(self.start[safe].astype(np.int64), lengths) + offsets
        runs = Runs(self._rows.shape[1] - 1, capacity=0)
        runs._use_rows(np.concatenate([self._rows[source], np.zeros((16, self._rows.shape[1]))]))
        segments = np.stack([starts, lengths, lengths, starts], axis=1).astype(np.int32)
        runs._use_segments(segments)
        runs.meta[0] = total
        return runs

    def replace(self, slots: np.ndarray, other: Runs) -> None:
        """Slot `slots[k]`'s rows become `other`'s slot k's (a delta checkpoint's, compacted).

        The new rows go to the top of the arena; the old ones are left as slack for the next
        compaction."""
        self.ensure_slots(int(slots.max(initial=0)) + 1)
        n, total = len(slots), int(other.meta[0])
        while int(self.meta[0]) + total > len(self._rows):
            self._grow()
        top = int(self.meta[0])
        self._rows[top : top + total] = other._rows[:total]
        self.start[slots] = top + other.start[:n]
        self.base[slots] = self.start[slots]
        self.length[slots] = other.length[:n]
        self.cap[slots] = other.length[:n]
        self.meta[0] = top + total

    def rows(self, slot: int) -> tuple[list[float], list[list[float]]]:
        s, m = int(self.start[slot]), int(self.length[slot])
        return self.keys[s : s + m].tolist(), self.vals[s : s + m].tolist()

    def memory_bytes(self) -> int:
        return self._rows.nbytes + self._segments.nbytes

    def copy(self) -> Runs:
        """An independent copy of the arena up to its top, not compacted: a memcpy, cheap
        enough to take under a lock (`state()` on the copy compacts it after)."""
        runs = Runs(columns=self._rows.shape[1] - 1, capacity=0)
        runs._use_rows(self._rows[: int(self.meta[0])].copy())
        runs._use_segments(self._segments.copy())
        runs.meta[0] = self.meta[0]
        return runs

    def state(self) -> dict[str, np.ndarray]:
        """Compacted rows and segments: what `from_state` rebuilds the runs from."""
        self.compact()
        return {"rows": self._rows, "segments": self._segments}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Runs:
        runs = cls(columns=state["rows"].shape[1] - 1, capacity=0)
        runs._use_rows(state["rows"].copy())
        segments = state["segments"]
        if segments.shape[1] == 3:  # saved before slices kept their base: compacted, base=start
            segments = np.concatenate([segments, segments[:, :1]], axis=1)
        runs._use_segments(np.array(segments, dtype=np.int32, order="C"))
        runs.meta[0] = runs.rows_live
        return runs

    def _grow(self) -> None:
        held = self.rows_held
        if 2 * (int(self.meta[0]) - held) > held + 1024:
            self.compact(room=True)
        top = int(self.meta[0])
        # Always larger than now: a run that needs more room than half the arena gets it on
        # a later round (sizing by `top` alone could repeat the same size forever).
        size = max(1024, top + top // 2, len(self._rows) * 3 // 2)
        rows = np.zeros((size, self._rows.shape[1]), dtype=np.float64)
        rows[:top] = self._rows[:top]
        self._use_rows(rows)
