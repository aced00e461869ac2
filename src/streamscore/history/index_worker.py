"""The indexing process: moves acknowledged events from the durable log into history chunks,
compacts them and applies retention, on a store connection of its own.

It runs beside the serving process, not in it, because chunking is CPU work in Python (grouping
and encoding every event) that would otherwise hold the serving process's GIL: with it in a
thread, ingest ran at ~60 % of the rate it reached with indexing deferred. Everything it needs
is in the store (the log is the input, `indexed_seq` the progress), so it shares no state with
the service beyond three signals: `wake` (the committer waits on the lag), `stop` (index what is
logged, then exit) and, for PostgreSQL, the first seq of an append whose commit is in doubt,
which it must not chunk yet (`pending`). It reports `(indexed_seq, retention_deleted)` on
`progress` after each pass that changed either.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

from streamscore import logs
from streamscore.history.retention import Retention
from streamscore.store.open import open_store

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def run(
    url: str,
    timeout: float,
    interval: float,
    retention_days: float,
    log_level: str,
    wake: Event,
    stop: Event,
    progress: Connection,
    pending: Synchronized[int],
) -> None:
    """The process's body (its `target`)."""
    _die_with_parent()
    logs.configure(log_level)
    parent = os.getppid()
    store = open_store(url, timeout, indexer=True)
    store.share_pending(pending)
    retention = Retention(store, retention_days)
    reported = (store.indexed_seq, retention.deleted)
    progress.send(reported)
    try:
        while os.getppid() == parent:
            stopping = stop.is_set()
            try:
                moved = store.index_pending()
                if moved < store.index_chunk // 2 and not stopping:  # caught up
                    retention.step()
                    store.compact()
            except Exception as exc:  # keep indexing alive through transient store errors
                log.error("indexing failed, retrying: %s", exc)
                moved = -1
            now = (store.indexed_seq, retention.deleted)
            if now != reported:
                progress.send(now)
                reported = now
            if stopping and moved <= 0:  # everything logged is chunked (or the store is down)
                return
            if moved < store.index_chunk // 2:  # caught up: let the log fill
                wake.wait(interval)
                wake.clear()
    finally:
        store.close()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the service dies (a `kill -9` leaves no orphan writing
    to the store). Elsewhere the loop's parent check ends it within `interval`."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
