"""Background thread that moves acknowledged events from the log into history chunks, compacts
them, writes out dead letters, and applies retention.

Grouping a flush by user is a few vectorised NumPy passes and one row per (user, flush), so the
thread holds the GIL briefly; its SQL runs inside the database without it. A failed pass (disk full, locked) is logged and retried; the log keeps the rows.
"""

from __future__ import annotations

import logging
import threading

from streamscore.history.dead_letters import DeadLetters
from streamscore.history.retention import Retention
from streamscore.store.base import Store

log = logging.getLogger(__name__)


class Indexer:
    def __init__(
        self,
        store: Store,
        interval: float,
        dead_letters: DeadLetters,
        keep: int,
        retention: Retention,
    ) -> None:
        self.store = store
        self.retention = retention
        self.interval = interval
        self.dead_letters = dead_letters
        self.keep = keep
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Index now instead of at the next interval (the writer is waiting on the lag)."""
        self._wake.set()

    def close(self) -> None:
        """Stop after indexing everything logged so far."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.drain()

    def drain(self) -> None:
        while self.store.index_pending():
            pass
        self._flush_dead_letters()

    def _flush_dead_letters(self) -> None:
        rows = self.dead_letters.take()
        if rows:
            self.store.add_dead_letters(rows, self.keep)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                moved = self.store.index_pending()
                self._flush_dead_letters()
                if moved < self.store.index_chunk // 2:  # retention, compaction when caught up
                    self.retention.step()
                    self.store.compact()
            except Exception as exc:  # keep indexing alive through transient store errors
                log.error("indexing failed, retrying: %s", exc)
                moved = 0
            if moved < self.store.index_chunk // 2:  # caught up: let the log fill
                self._wake.wait(self.interval)
                self._wake.clear()
