"""Exact per-user rolling median over an event-time window, kept by compiled kernels.

A `WindowedStatistic` (see `windows.base`): `update` inserts a commit's live events and expires
what left the window; underneath, `insert` events, `expire` everything older than a cutoff,
then `get` a user's median. Thread-safe: the writer thread updates while HTTP handlers
read, each under `lock` (kernels release the GIL while they run); inserts hold it one slice of
`SLICE` events at a time, and the event loop `submit_get`s its reads so that it never blocks
on an insert (see `streamscore.handoff`). Every operation costs at most
a block of `kernels.BLOCK` keys plus logarithmic searches, however many events one user holds,
so a hot user cannot stall the others (see `windows.kernels`).

Slots of users whose window emptied go back to a free list and give their arrays back, so
a stream of ever-new user ids holds memory for the users live at once, not for all ever seen.

>>> medians = RollingMedians()
>>> medians.insert(["a", "a", "b"], np.array([10.0, 11.0, 12.0]), np.array([1.0, 3.0, 5.0], "f4"))
>>> medians.get("a")
(2.0, 2)
>>> medians.expire(cutoff=11.0)
>>> medians.get("a"), medians.get("nobody")
((3.0, 1), (None, 0))
>>> medians.users, medians.events
(2, 2)
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from streamscore.events import EventBatch
from streamscore.handoff import HandoffLock
from streamscore.windows import kernels
from streamscore.windows.event_time import StreamClock

MIN_HEAP = 1024
SLICE = 4096  # events per hold of the lock by `insert`: what a read may wait behind


class RollingMedians:
    def __init__(self) -> None:
        self.lock = HandoffLock()
        self._keys, self._meta = kernels.new_lists()
        self._empty = np.zeros(0, dtype=np.int32)  # shared by every empty slot
        self._size = np.zeros(0, dtype=np.int64)
        self._blocks = np.zeros(0, dtype=np.int64)
        self._heap_ts = np.empty(MIN_HEAP, dtype=np.float64)
        self._heap_slot = np.empty(MIN_HEAP, dtype=np.int32)
        self._heap_key = np.empty(MIN_HEAP, dtype=np.int32)
        self._heap_n = 0
        self._slot_of: dict[str, int] = {}
        self._user_of: list[str | None] = []
        self._free: list[int] = []

    @property
    def users(self) -> int:
        """Users with at least one event in the window."""
        return len(self._slot_of)

    @property
    def events(self) -> int:
        return self._heap_n

    @property
    def slots(self) -> int:
        """Slots allocated, live or free: bounded by the most users ever live at once."""
        return len(self._user_of)

    def update(self, events: EventBatch, scores: np.ndarray, clock: StreamClock) -> None:
        """Insert the events still inside the window, then expire what fell out of it."""
        live = events.timestamps >= clock.cutoff
        if live.all():
            self.insert(events.user_ids, events.timestamps, scores)
        elif live.any():
            self.insert(
                [u for u, k in zip(events.user_ids, live, strict=True) if k],
                events.timestamps[live],
                scores[live],
            )
        self.expire(clock.cutoff)

    def insert(self, user_ids: list[str], timestamps: np.ndarray, scores: np.ndarray) -> None:
        keys = kernels.to_keys(scores)
        ts = np.ascontiguousarray(timestamps, dtype=np.float64)
        for lo in range(0, len(user_ids), SLICE):
            hi = lo + SLICE
            self._insert(user_ids[lo:hi], ts[lo:hi], keys[lo:hi])

    def _insert(self, user_ids: list[str], ts: np.ndarray, keys: np.ndarray) -> None:
        with self.lock:
            slots = np.fromiter(
                (self._slot(u) for u in user_ids), dtype=np.int64, count=len(user_ids)
            )
            self._resize_heap(self._heap_n + len(user_ids))
            self._heap_n = kernels.insert_many(
                self._keys,
                self._meta,
                self._size,
                self._blocks,
                self._heap_ts,
                self._heap_slot,
                self._heap_key,
                self._heap_n,
                slots,
                ts,
                keys,
            )

    def expire(self, cutoff: float) -> None:
        with self.lock:
            if self._heap_n == 0 or self._heap_ts[0] >= cutoff:
                return
            self._heap_n, emptied = kernels.expire(
                self._keys,
                self._meta,
                self._size,
                self._blocks,
                self._empty,
                self._heap_ts,
                self._heap_slot,
                self._heap_key,
                self._heap_n,
                cutoff,
            )
            for slot in emptied.tolist():
                user = self._user_of[slot]
                assert user is not None
                del self._slot_of[user]
                self._user_of[slot] = None
                self._free.append(slot)
            self._resize_heap(self._heap_n)

    def get(self, user_id: str) -> tuple[float | None, int]:
        """(median, count); the median is None when the user has no event in the window."""
        return self.submit_get(user_id).result()

    def submit_get(self, user_id: str) -> Future[tuple[float | None, int]]:
        """`get`, run as soon as the lock is free (now, or when an insert slice ends)."""

        def read() -> tuple[float | None, int]:
            slot = self._slot_of.get(user_id)
            if slot is None:
                return None, 0
            median = kernels.median_of(self._keys, self._meta, self._size, self._blocks, slot)
            return float(median), int(self._size[slot])

        return self.lock.submit(read)

    def snapshot(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every event in the window as (user ids, timestamps, keys): `restore` rebuilds an
        equal state from it (a checkpoint).

        >>> m = RollingMedians()
        >>> m.insert(["a", "b", "a"], np.array([1.0, 2.0, 3.0]), np.array([5, 1, 7], "f4"))
        >>> copy = RollingMedians()
        >>> copy.restore(*m.snapshot())
        >>> copy.get("a"), copy.get("b"), copy.events
        ((6.0, 2), (1.0, 1), 3)
        """
        with self.lock:
            n = self._heap_n
            users = [self._user_of[s] for s in self._heap_slot[:n].tolist()]
            return users, self._heap_ts[:n].copy(), self._heap_key[:n].copy()  # type: ignore[return-value]

    def restore(self, user_ids: list[str], timestamps: np.ndarray, keys: np.ndarray) -> None:
        """Add the events of a `snapshot` (to an empty instance)."""
        for lo in range(0, len(user_ids), SLICE):
            hi = lo + SLICE
            self._insert(user_ids[lo:hi], timestamps[lo:hi], keys[lo:hi])

    def user_list(self) -> list[str]:
        """The users with at least one event in the window."""
        with self.lock:
            return list(self._slot_of)

    def medians(self, exclude_prefix: str | None = None) -> np.ndarray:
        """Every user's median (users with an empty window left out), without the users whose
        id starts with `exclude_prefix` (the simulator's) when given.

        >>> m = RollingMedians()
        >>> m.insert(["a", "sim:b", "c"], np.array([1.0, 2.0, 3.0]), np.array([1, 9, 3], "f4"))
        >>> m.medians().tolist(), m.medians(exclude_prefix="sim:").tolist()
        ([1.0, 9.0, 3.0], [1.0, 3.0])
        """
        with self.lock:
            values = kernels.all_medians(
                self._keys, self._meta, self._size, self._blocks, len(self._user_of)
            )
            if exclude_prefix is not None:
                values[[u is not None and u.startswith(exclude_prefix) for u in self._user_of]] = (
                    np.nan
                )
        return values[~np.isnan(values)]

    def memory_bytes(self) -> int:
        """Bytes held by the per-user arrays, the time heap and slot tables (not the id dict)."""
        with self.lock:
            arrays = kernels.capacity_bytes(self._keys, self._meta, len(self._user_of))
            heap = self._heap_ts.nbytes + self._heap_slot.nbytes + self._heap_key.nbytes
            return int(arrays + heap + self._size.nbytes + self._blocks.nbytes)

    def _slot(self, user_id: str) -> int:
        slot = self._slot_of.get(user_id)
        if slot is not None:
            return slot
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._slot_of[user_id] = slot
        self._user_of[slot] = user_id
        return slot

    def _grow(self) -> None:
        old = len(self._user_of)
        new = max(64, old * 2)
        kernels.add_slots(self._keys, self._meta, self._empty, new - old)
        self._size = np.concatenate([self._size, np.zeros(new - old, dtype=np.int64)])
        self._blocks = np.concatenate([self._blocks, np.zeros(new - old, dtype=np.int64)])
        self._user_of.extend([None] * (new - old))
        self._free.extend(range(new - 1, old - 1, -1))

    def _resize_heap(self, needed: int) -> None:
        """Double the heap when `needed` does not fit; when under a quarter is used, cut it to
        twice what is used, so shrinking and growing back cannot alternate call by call."""
        capacity = len(self._heap_ts)
        if needed > capacity:
            capacity = max(needed, 2 * capacity)
        elif capacity > MIN_HEAP and 4 * needed < capacity:
            capacity = max(MIN_HEAP, 2 * needed)
        else:
            return
        n = self._heap_n
        for name in ("_heap_ts", "_heap_slot", "_heap_key"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
