"""Rejected events, kept with their reason, raw bytes and arrival time for inspection.

The event loop only appends to a buffer bounded by rows (`buffer`) and by bytes (`max_bytes`,
counting each row's raw text and reason): the indexer's thread (`history.indexer`) writes it out
and trims the table to `--dead-letter-limit` rows. If rejections arrive faster than that thread
drains them, the oldest unwritten ones are dropped and counted, never blocking ingest; so are
the rejections a request does not keep whole (`skip`).

>>> letters = DeadLetters(buffer=10, max_bytes=600)  # rows of 64 + 4 * 43 bytes
>>> letters.add([Rejection(i, "bad", b"x" * 40) for i in range(4)])
>>> [idx for _, idx, _, _ in letters.take()], letters.dropped
([2, 3], 2)
>>> letters.skip(5); letters.dropped
7
"""

from __future__ import annotations

import threading
import time
from collections import deque

from streamscore.events import Rejection

RAW_LIMIT = 4096  # bytes of each raw event kept
ROW_OVERHEAD = 64  # bytes a buffered row costs beyond its text (tuple, float, int)


class DeadLetters:
    def __init__(self, buffer: int = 10_000, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.buffer = buffer
        self.max_bytes = max_bytes
        self._pending: deque[tuple[float, int, str, str]] = deque()
        self._lock = threading.Lock()
        self.bytes = 0  # held by the buffer now, as `_size` counts them
        self.dropped = 0

    def add(self, rejections: list[Rejection]) -> None:
        now = time.time()
        rows = [
            (now, r.index, r.error, r.raw[:RAW_LIMIT].decode("utf-8", errors="replace"))
            for r in rejections[-self.buffer :]
        ]
        with self._lock:
            self.dropped += len(rejections) - len(rows)
            for row in rows:
                self._pending.append(row)
                self.bytes += _size(row)
            while len(self._pending) > self.buffer or self.bytes > self.max_bytes:
                self.bytes -= _size(self._pending.popleft())
                self.dropped += 1

    def skip(self, n: int) -> None:
        """Count `n` rejections that were not kept as dead letters."""
        with self._lock:
            self.dropped += n

    def take(self) -> list[tuple[float, int, str, str]]:
        with self._lock:
            rows = list(self._pending)
            self._pending.clear()
            self.bytes = 0
        return rows


def _size(row: tuple[float, int, str, str]) -> int:
    """Bytes a buffered row holds, counting text at 4 bytes a character, the worst case."""
    return ROW_OVERHEAD + 4 * (len(row[2]) + len(row[3]))
