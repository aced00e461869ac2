"""Rejected events, kept with their reason, raw bytes and arrival time for inspection.

The event loop only appends to a bounded buffer; the store's background thread writes the
buffer out and trims the table to `limit` rows. If rejections arrive faster than that thread
drains them, the oldest unwritten ones are dropped and counted, never blocking ingest.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from streamscore.batch import Rejection

RAW_LIMIT = 4096  # bytes of each raw event kept


class DeadLetters:
    def __init__(self, buffer: int = 10_000) -> None:
        self._pending: deque[tuple[float, int, str, str]] = deque(maxlen=buffer)
        self._lock = threading.Lock()
        self.dropped = 0

    def add(self, rejections: list[Rejection]) -> None:
        now = time.time()
        with self._lock:
            room = self._pending.maxlen - len(self._pending)  # type: ignore[operator]
            self.dropped += max(0, len(rejections) - room)
            for r in rejections:
                raw = r.raw[:RAW_LIMIT].decode("utf-8", errors="replace")
                self._pending.append((now, r.index, r.error, raw))

    def take(self) -> list[tuple[float, int, str, str]]:
        with self._lock:
            rows = list(self._pending)
            self._pending.clear()
        return rows
