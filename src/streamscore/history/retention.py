"""Retention: history older than `days` is deleted in the background, a bounded step at a time.

The indexing process (`history.index_worker`) calls `step()` between indexing passes. A sweep takes bounded
steps until the store says it has reached the end, then rests for `rest` seconds. What a step
is belongs to the store: SQLite deletes the expired chunks among the next `chunk`; PostgreSQL drops one
expired day partition.

>>> import tempfile, pathlib, time
>>> import numpy as np
>>> from streamscore.store import log_codec
>>> from streamscore.store.sqlite import SQLiteStore
>>> store = SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "events.db")
>>> now = time.time()
>>> def log(first_seq, users, stamps):
...     blob = log_codec.encode(users, [None] * len(users), np.array(stamps),
...                             np.zeros(len(users), "f4"), np.zeros((len(users), 1)))
...     store.append(first_seq, blob, 1, 0, 0, 0.0, len(users))
>>> log(1, ["u", "v"], [now - 3 * 86400, now - 2 * 86400])  # one flush
>>> log(3, ["u"], [now - 1])
>>> _ = store.index_pending()
>>> sweep = Retention(store, days=1, chunk=2, rest=0)
>>> sweep.step(now), sweep.step(now)  # one chunk per user and day; 2 scanned a step
(1, 1)
>>> [row[0] for row in store.history("u", 0.0, now, (0.0, 0), 10)] == [now - 1]
True
>>> _ = store.index_pending(), log(4, ["u"], [now])
>>> [row[0] for row in store.history("u", 0.0, now, (0.0, 0), 10)] == [now - 1, now]  # tail
True
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
