"""Exactly-once by `event_id`: ids committed within the dedupe horizon are recognised again.

An id is *claimed* by the request that brings it first; a copy arriving while that request is
still in flight is neither processed nor acknowledged as a duplicate at once: it waits for the
owner's outcome (`waits`), so a duplicate is never acknowledged before the original is durable.
A claim is *committed* with the write that stores it, or *released* if that write fails (then a
waiting copy is processed in its place). Committed ids are forgotten once stream time has moved
`horizon` seconds past their commit, or, oldest first, when more than `max_ids` are held (a
backfill with ids and a standing stream time must not grow memory without bound; `evicted_early`
counts ids forgotten that way, whose later copies would be processed again). The event log keeps
the events of the retained commits, so a restart reloads exactly the ids this set held.

>>> ids = EventIdDeduper(horizon=60)
>>> owner = object()
>>> claim = ids.claim(["a", None, "a", "b"], owner)
>>> claim.fresh.tolist(), claim.duplicates
([True, True, False, True], 1)
>>> ids.committed(["a", "b"], stream_time=1000.0)
>>> ids.claim(["b", "c"], object()).fresh.tolist()
[False, True]
>>> ids.evict(stream_time=1061.0); ids.claim(["a"], object()).fresh.tolist()
[True]
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Claim:
    fresh: np.ndarray  # bool [n]: events this request processes
    duplicates: int = 0  # events whose id is committed (or repeated within this request)
    waits: dict[object, list[int]] = field(default_factory=dict)  # owner -> positions of copies


class EventIdDeduper:
    def __init__(self, horizon: float, max_ids: int = 10_000_000) -> None:
        self.horizon = horizon
        self.max_ids = max_ids
        self.evicted_early = 0
        self._committed_ids: set[str] = set()
        self._owners: dict[str, object] = {}  # in-flight id -> the request that claimed it
        self._commits: deque[tuple[float, list[str]]] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._committed_ids) + len(self._owners)

    def claim(self, event_ids: list[str | None], owner: object) -> Claim:
        """Claim the request's new ids for `owner`; copies of in-flight ids wait for theirs."""
        claim = Claim(np.ones(len(event_ids), dtype=bool))
        if not any(event_ids):
            return claim
        with self._lock:
            committed, owners = self._committed_ids, self._owners
            for i, event_id in enumerate(event_ids):
                if event_id is None:
                    continue
                if event_id in committed:
                    claim.fresh[i] = False
                    claim.duplicates += 1
                elif (held_by := owners.get(event_id)) is None:
                    owners[event_id] = owner
                else:
                    claim.fresh[i] = False
                    if held_by is owner:  # repeated within the request: the first copy wins
                        claim.duplicates += 1
                    else:
                        claim.waits.setdefault(held_by, []).append(i)
        return claim

    def release(self, event_ids: list[str | None]) -> None:
        """Un-claim ids whose write failed, so a retry or a waiting copy is processed."""
        with self._lock:
            for event_id in event_ids:
                if event_id is not None:
                    self._owners.pop(event_id, None)

    def committed(self, event_ids: list[str | None], stream_time: float) -> None:
        ids = [e for e in event_ids if e is not None]
        if not ids:
            return
        with self._lock:
            for event_id in ids:
                self._owners.pop(event_id, None)
            self._committed_ids.update(ids)
            self._commits.append((stream_time, ids))
            while len(self._committed_ids) > self.max_ids and len(self._commits) > 1:
                dropped = self._commits.popleft()[1]
                self._committed_ids.difference_update(dropped)
                self.evicted_early += len(dropped)

    def evict(self, stream_time: float) -> None:
        with self._lock:
            while self._commits and self._commits[0][0] < stream_time - self.horizon:
                self._committed_ids.difference_update(self._commits.popleft()[1])

    def load(self, event_ids: list[str], stream_time: float) -> None:
        """Ids found in the event log at startup."""
        self.committed(list(event_ids), stream_time)

    def memory_bytes(self) -> int:
        """An estimate: set and dict slots plus the id strings."""
        with self._lock:
            ids = len(self._committed_ids) + len(self._owners)
        return ids * 120
