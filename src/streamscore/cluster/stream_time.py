"""Cluster-wide stream time: the largest event timestamp accepted by any node.

Lateness and windows must not depend on which node a request reached, so every node reads the
same stream time: it lives in the bucket's `stream_time` key, only ever raised (compare-and-set
on the key's revision, retried when another node raised it first), and every node watches the
key. A node's `time` may lag the cluster's by the watch latency (milliseconds); it never runs
ahead of it, and never goes down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from streamscore.cluster.bus import Cluster

log = logging.getLogger(__name__)

KEY = "stream_time"


class ClusterStreamTime:
    def __init__(self, cluster: Cluster, resync_interval: float = 1.0) -> None:
        self.kv = cluster.kv
        self.resync_interval = resync_interval
        self.time = -math.inf
        self._task: asyncio.Task[None] | None = None

    def _observe(self, value: bytes | None) -> None:
        if value:
            self.time = max(self.time, float(value))

    async def advance(self, timestamp: float) -> float:
        """Raise the cluster's stream time to `timestamp` if it is higher; return the new time."""
        while timestamp > self.time:
            try:
                entry: KeyValue.Entry | None = await self.kv.get(KEY)
            except nats.js.errors.KeyNotFoundError:
                entry = None
            if entry is not None:
                self._observe(entry.value)
                if timestamp <= self.time:
                    break
            try:
                if entry is None:
                    await self.kv.create(KEY, repr(float(timestamp)).encode())
                else:
                    await self.kv.update(KEY, repr(float(timestamp)).encode(), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # raised meanwhile by another node: compare again
            self.time = float(timestamp)
        return self.time

    async def refresh(self) -> float:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            self._observe((await self.kv.get(KEY)).value)
        return self.time

    async def start(self) -> None:
        """Follow the key in the background (and re-read it now and then, should the watch stall)."""
        await self.refresh()
        self._task = asyncio.create_task(self._follow(), name="stream-time")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            try:
                watcher = await self.kv.watch(KEY)
                try:
                    while True:
                        try:
                            entry = await watcher.updates(timeout=self.resync_interval)
                        except nats.errors.TimeoutError:
                            await self.refresh()
                            continue
                        if entry is not None and entry.operation is None:
                            self._observe(entry.value)
                finally:
                    await watcher.stop()
            except nats.errors.Error as err:
                log.warning("stream time watch failed, retrying: %r", err)
                await asyncio.sleep(self.resync_interval)
