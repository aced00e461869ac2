"""Retention: history older than `days` is deleted in the background, a bounded step at a time.

The store's background thread calls `step()` between indexing passes. A sweep takes bounded
steps until the store says it has reached the end, then rests for `rest` seconds. What a step
is belongs to the store: SQLite deletes among the next `chunk` keys; PostgreSQL drops one
expired day partition.

>>> import tempfile, pathlib, time
>>> from streamscore.store.sqlite import SQLiteStore
>>> store = SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "events.db")
>>> now = time.time()
>>> _ = store._main.executemany(
...     "INSERT INTO history VALUES (?, ?, ?, 0.5, NULL, 1, '[]')",
...     [("u", now - 3 * 86400, 1), ("u", now - 1, 2), ("v", now - 2 * 86400, 3)])
>>> sweep = Retention(store, days=1, chunk=2, rest=0)
>>> sweep.step(now), sweep.step(now), sweep.step(now)
(1, 1, 0)
>>> [r[0] for r in store._main.execute("SELECT seq FROM history")]
[2]
"""

from __future__ import annotations

import time

from streamscore.store.base import RetentionCursor, Store

DAY = 86_400.0


class Retention:
    def __init__(self, store: Store, days: float, chunk: int = 20_000, rest: float = 5.0):
        self.store = store
        self.days = days
        self.chunk = chunk
        self.rest = rest
        self.deleted = 0
        self._after: RetentionCursor | None = None
        self._next_sweep = 0.0

    def step(self, now: float | None = None) -> int:
        """Delete old rows in the next chunk of keys; returns how many were deleted."""
        if self.days <= 0 or time.monotonic() < self._next_sweep:
            return 0
        now = time.time() if now is None else now
        deleted, self._after = self.store.expire_history(
            now - self.days * DAY, self._after, self.chunk
        )
        if self._after is None:  # the sweep reached the end of the keys
            self._next_sweep = time.monotonic() + self.rest
        self.deleted += deleted
        return deleted
