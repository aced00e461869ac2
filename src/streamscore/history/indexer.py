"""The service's side of history indexing: starts `index_worker` in its own process, applies
the progress it reports, restarts it if it dies, and writes out dead letters.

The process owns chunking, compaction and retention; this side only publishes its
`indexed_seq` to the store (so pages stop reading what is chunked and the log can be
truncated) and keeps the counters the service reports.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading

from streamscore.history import index_worker
from streamscore.history.dead_letters import DeadLetters
from streamscore.store.base import Store

log = logging.getLogger(__name__)

_spawn = mp.get_context("spawn")  # never fork: the service has threads and torch's pools


class Indexer:
    def __init__(
        self,
        store: Store,
        url: str,
        timeout: float,
        interval: float,
        retention_days: float,
        log_level: str,
        dead_letters: DeadLetters,
        keep: int,
    ) -> None:
        self.store = store
        self.interval = interval
        self.dead_letters = dead_letters
        self.keep = keep
        self.retention_deleted = 0
        self.restarts = 0
        self._args = (url, timeout, interval, retention_days, log_level)
        self._wake = _spawn.Event()
        self._stop = _spawn.Event()
        self._pending = _spawn.Value("q", 0)
        store.share_pending(self._pending)
        self._process: mp.process.BaseProcess | None = None
        self._progress: mp.connection.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> None:
        self._launch()
        self._thread.start()

    def wake(self) -> None:
        """Index now instead of at the next interval (the writer is waiting on the lag)."""
        self._wake.set()

    def close(self) -> None:
        """Stop after indexing everything logged so far."""
        if self._thread.ident is None:  # never started
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._flush_dead_letters()

    def _launch(self) -> None:
        receive, send = _spawn.Pipe(duplex=False)
        self._process = _spawn.Process(
            target=index_worker.run,
            args=(*self._args, self._wake, self._stop, send, self._pending),
            name="streamscore-indexer",
            daemon=True,
        )
        self._process.start()
        send.close()  # the child holds the only writer: its exit is our EOF
        self._progress = receive

    def _run(self) -> None:
        assert self._progress is not None and self._process is not None
        while True:
            try:
                if self._progress.poll(self.interval):
                    indexed, self.retention_deleted = self._progress.recv()
                    self.store.indexed_up_to(indexed)
            except EOFError:  # the process ended
                self._process.join()
                if self._stop.is_set():
                    return
                self.restarts += 1
                log.error(
                    "the indexing process died, restarting it",
                    extra={"exitcode": self._process.exitcode},
                )
                if self._stop.wait(self.interval):  # no tight loop when it dies at start
                    return
                self._launch()
            try:
                self._flush_dead_letters()
            except Exception as exc:  # those rows are lost; indexing goes on
                log.error("writing dead letters failed: %s", exc)

    def _flush_dead_letters(self) -> None:
        rows = self.dead_letters.take()
        if rows:
            self.store.add_dead_letters(rows, self.keep)
