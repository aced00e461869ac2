"""Exact per-user rolling median over an event-time window, kept by compiled kernels.

A River-style statistic with a batch protocol: `insert` events, `expire` everything older than
a cutoff, then `get` a user's median. Thread-safe: the writer thread updates while HTTP handlers
read, each under `lock` (kernels release the GIL while they run).

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

import threading

import numpy as np

from streamscore.windows import kernels


class RollingMedians:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._ts, self._by_time, self._by_value = kernels.new_lists()
        self._head = np.zeros(0, dtype=np.int64)
        self._size = np.zeros(0, dtype=np.int64)
        self._min_ts = np.zeros(0, dtype=np.float64)
        self._slot_of: dict[str, int] = {}
        self._user_of: list[str | None] = []
        self._free: list[int] = []

    @property
    def users(self) -> int:
        """Users with at least one event in the window."""
        return len(self._slot_of)

    @property
    def events(self) -> int:
        return int(self._size.sum())

    def insert(self, user_ids: list[str], timestamps: np.ndarray, scores: np.ndarray) -> None:
        with self.lock:
            slots = np.fromiter(
                (self._slot(u) for u in user_ids), dtype=np.int64, count=len(user_ids)
            )
            kernels.insert_many(
                self._ts,
                self._by_time,
                self._by_value,
                self._head,
                self._size,
                self._min_ts,
                slots,
                timestamps.astype(np.float64, copy=False),
                scores.astype(np.float32, copy=False),
            )

    def expire(self, cutoff: float) -> None:
        with self.lock:
            candidates = np.flatnonzero(self._min_ts < cutoff)
            if len(candidates) == 0:
                return
            emptied = kernels.expire(
                self._ts,
                self._by_time,
                self._by_value,
                self._head,
                self._size,
                self._min_ts,
                candidates,
                cutoff,
            )
            for slot in emptied.tolist():
                user = self._user_of[slot]
                assert user is not None
                del self._slot_of[user]
                self._user_of[slot] = None
                self._free.append(slot)

    def get(self, user_id: str) -> tuple[float | None, int]:
        """(median, count); the median is None when the user has no event in the window."""
        with self.lock:
            slot = self._slot_of.get(user_id)
            if slot is None:
                return None, 0
            return float(kernels.median_of(self._by_value, self._size, slot)), int(self._size[slot])

    def medians(self) -> np.ndarray:
        """Every user's median (users with an empty window left out)."""
        with self.lock:
            values = kernels.all_medians(self._by_value, self._size, len(self._user_of))
        return values[~np.isnan(values)]

    def memory_bytes(self) -> int:
        """Bytes held by the per-user arrays and slot tables (not the user-id dict)."""
        with self.lock:
            arrays = kernels.capacity_bytes(
                self._ts, self._by_time, self._by_value, len(self._user_of)
            )
            return int(arrays + self._head.nbytes + self._size.nbytes + self._min_ts.nbytes)

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
        kernels.add_slots(self._ts, self._by_time, self._by_value, new - old)
        self._head = np.concatenate([self._head, np.zeros(new - old, dtype=np.int64)])
        self._size = np.concatenate([self._size, np.zeros(new - old, dtype=np.int64)])
        self._min_ts = np.concatenate([self._min_ts, np.full(new - old, np.inf)])
        self._user_of.extend([None] * (new - old))
        self._free.extend(range(new - 1, old - 1, -1))
