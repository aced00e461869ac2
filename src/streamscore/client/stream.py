"""Cut an unbounded iterable of events into batches: `size` events, or fewer once the batch's
first event has waited `linger` seconds.

The source is read by its own thread (or task) into a bounded queue, so linger holds even
while the source blocks waiting for its next event, and memory stays bounded whatever the
source's length. An exception raised by the source is re-raised to the caller after the
events before it were batched.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any


class _End:
    """Marks the source's end; carries the exception that ended it, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


_DUE = object()  # handed to `_Batcher.add` when its `timeout` ran out without an item


class _Batcher:
    """The batching rule without the waiting, so the sync and async readers share it."""

    def __init__(self, size: int, linger: float) -> None:
        self.size = size
        self.linger = linger
        self.batch: list[Any] = []
        self.deadline = 0.0
        self.end: _End | None = None

    def timeout(self) -> float | None:
        """Seconds to wait for the next item: until the open batch is due, forever if none is."""
        return max(self.deadline - time.monotonic(), 0.0) if self.batch else None

    def add(self, item: Any) -> list[Any] | None:
        """Take the next item (`_End`, or `_DUE` once `timeout` ran out); returns the batch that
        this closes, if any."""
        if isinstance(item, _End):
            self.end = item
        elif item is not _DUE:
            if not self.batch:
                self.deadline = time.monotonic() + self.linger
            self.batch.append(item)
            if len(self.batch) < self.size:
                return None
        done, self.batch = self.batch, []
        return done or None

    def finish(self) -> None:
        """After the end: re-raise what ended the source, if anything did."""
        if self.end is not None and self.end.error is not None:
            raise self.end.error


def batches(source: Iterable[Any], size: int, linger: float) -> Iterator[list[Any]]:
    """Batches of `source`, in order.

    >>> [len(b) for b in batches(range(7), size=3, linger=1.0)]
    [3, 3, 1]
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in source:
                if not put(item):
                    return
        except BaseException as exc:  # re-raised in the consumer
            put(_End(exc))
            return
        put(_End())

    reader = threading.Thread(target=read, name="streamscore-batches", daemon=True)
    reader.start()
    batcher = _Batcher(size, linger)
    try:
        while batcher.end is None:
            try:
                item = items.get(timeout=batcher.timeout())
            except queue.Empty:
                item = _DUE
            if (batch := batcher.add(item)) is not None:
                yield batch
    finally:
        stop.set()
    batcher.finish()


async def abatches(
    source: AsyncIterable[Any] | Iterable[Any], size: int, linger: float
) -> AsyncIterator[list[Any]]:
    """`batches` for asyncio; a plain iterable must not block (it is read on the event loop)."""
    items: asyncio.Queue[Any] = asyncio.Queue(maxsize=size)

    async def read() -> None:
        try:
            if isinstance(source, AsyncIterable):
                async for item in source:
                    await items.put(item)
            else:
                for item in source:
                    await items.put(item)
        except Exception as exc:  # re-raised in the consumer
            await items.put(_End(exc))
            return
        await items.put(_End())

    reader = asyncio.create_task(read())
    batcher = _Batcher(size, linger)
    try:
        while batcher.end is None:
            try:
                async with asyncio.timeout(batcher.timeout()):
                    item = await items.get()
            except TimeoutError:
                item = _DUE
            if (batch := batcher.add(item)) is not None:
                yield batch
    finally:
        reader.cancel()
    batcher.finish()
