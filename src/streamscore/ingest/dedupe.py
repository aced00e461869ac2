"""Exactly-once by `event_id`: ids acknowledged within the dedupe horizon are recognised again.

Ids are claimed before scoring (so a duplicate costs no inference), released if their write
fails (so a retry is not mistaken for a duplicate), and forgotten once stream time has moved
`horizon` seconds past the commit that stored them. The event log keeps those same events, so a
restart reloads exactly the ids this set held.

>>> ids = EventIdDeduper(horizon=60)
>>> ids.claim(["a", None, "a", "b"]).tolist()
[True, True, False, True]
>>> ids.committed(["a", "b"], stream_time=1000.0)
>>> ids.claim(["b", "c"]).tolist()
[False, True]
>>> ids.evict(stream_time=1061.0); ids.claim(["a"]).tolist()
[True]
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class EventIdDeduper:
    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self._seen: set[str] = set()
        self._committed: deque[tuple[float, list[str]]] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, event_ids: list[str | None]) -> np.ndarray:
        """Mask of events to process: no id, or an id not seen (earlier or in this batch)."""
        keep = np.ones(len(event_ids), dtype=bool)
        if not any(event_ids):
            return keep
        with self._lock:
            seen = self._seen
            for i, event_id in enumerate(event_ids):
                if event_id is None:
                    continue
                if event_id in seen:
                    keep[i] = False
                else:
                    seen.add(event_id)
        return keep

    def release(self, event_ids: list[str | None]) -> None:
        """Un-claim ids whose write failed."""
        with self._lock:
            self._seen.difference_update(e for e in event_ids if e is not None)

    def committed(self, event_ids: list[str | None], stream_time: float) -> None:
        ids = [e for e in event_ids if e is not None]
        if ids:
            with self._lock:
                self._committed.append((stream_time, ids))

    def evict(self, stream_time: float) -> None:
        with self._lock:
            while self._committed and self._committed[0][0] < stream_time - self.horizon:
                self._seen.difference_update(self._committed.popleft()[1])

    def load(self, event_ids: list[str], stream_time: float) -> None:
        """Ids found in the event log at startup."""
        self.claim(list(event_ids))
        self.committed(list(event_ids), stream_time)
