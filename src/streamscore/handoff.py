"""A lock whose waiting reads are run by the thread that holds it.

The ingest path updates windows and features under a lock, slice by slice, on its own
threads; HTTP reads of the same state run on the event loop. A read that blocked on the lock
would stall the loop (every other request with it) for the rest of the slice, and
`threading.Lock` is not fair: the updater releases it between slices and takes it straight
back, so a blocked reader may wait out a whole batch. Here a read is queued instead: whoever
holds the lock runs the queued reads when it lets go, before anyone else can take it, so a
read waits one slice at most and the loop awaits a future meanwhile. An idle lock runs the
read at once, on the caller's thread.

>>> lock = HandoffLock()
>>> lock.submit(lambda: 6 * 7).result()
42
>>> with lock:
...     late = lock.submit(lambda: "after the holder")
...     late.done()
False
>>> late.result()
'after the holder'
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class HandoffLock:
    """`with lock:` for updates; `submit(read)` for reads that must not block their thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: deque[tuple[Callable[[], object], Future[object]]] = deque()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def submit(self, read: Callable[[], T]) -> Future[T]:
        """Run `read` under the lock: now if it is free, else by its holder when it lets go."""
        future: Future[T] = Future()
        self._reads.append((read, future))  # type: ignore[arg-type]
        # Queued before trying: a holder that releases after our failed try still sees it.
        if self._lock.acquire(blocking=False):
            self._release()
        return future

    def _release(self) -> None:
        while True:
            self._run_reads()
            self._lock.release()
            if not self._reads or not self._lock.acquire(blocking=False):
                return

    def _run_reads(self) -> None:
        while self._reads:
            try:
                read, future = self._reads.popleft()
            except IndexError:  # another thread took the last one
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(read())
            except BaseException as exc:  # the reader gets it, not the holder
                future.set_exception(exc)


async def served(future: Future[T]) -> T:
    """Await a `submit`ted read on the event loop (no loop hop when it already ran)."""
    if future.done():
        return future.result()
    return await asyncio.wrap_future(future)
