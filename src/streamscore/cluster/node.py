"""One node of a cluster (`serve --cluster`): ingest to the bus, own some partitions, answer reads.

    any node                         JetStream                   the partition's owner
    --------                         ---------                   ---------------------
    POST /ingest: validate, dedupe   NAME.events.<p>             fetch a batch, score it,
      (message ids), split by  ──publish──▶ (file storage) ──pull──▶ commit its history and
      partition; 200 once every                                  progress to PostgreSQL,
      message is acknowledged                                    keep it (windows, features),
                                                                 then ack

Ownership comes from `leases`; taking a partition over restores its last checkpoint and reads
its messages from there: those the history already holds (`ClusterHistory.claim`) are only
applied to the state, the rest are committed. Reads of a partition this node owns are answered
here; others from the Redis online store (medians, features) when there is one, else forwarded
to the owner's address. History is read from PostgreSQL by any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
import numpy as np
import redis.asyncio as redis
from nats.aio.client import Client

from streamscore.cluster import checkpoint
from streamscore.cluster.bus import BusUnavailable, Cluster, open_cluster, publish_batch
from streamscore.cluster.consumer import Delivery, PartitionConsumer
from streamscore.cluster.history import MAX_EVENTS_PER_MESSAGE, ClusterHistory, Fenced
from streamscore.cluster.leases import Leases
from streamscore.cluster.online_store import OnlineStore
from streamscore.cluster.owner import Message, PartitionOwner
from streamscore.cluster.partitions import partition_of
from streamscore.cluster.stream_time import ClusterStreamTime
from streamscore.config import Settings
from streamscore.events import EventBatch, IngestResult, Rejection
from streamscore.features import definitions as feature_definitions
from streamscore.features.answers import encode_users
from streamscore.features.definitions import FeatureDefinitions
from streamscore.handoff import served
from streamscore.history.dead_letters import DeadLetters
from streamscore.ingest.decode import EventDecoder
from streamscore.ingest.request import idempotency_key
from streamscore.pipeline.admission import Admission
from streamscore.scoring.model import LoadedModel
from streamscore.scoring.scorer import Scorer
from streamscore.store import log_codec
from streamscore.store.base import StoreUnavailable
from streamscore.telemetry.cluster import ClusterCollector
from streamscore.telemetry.counters import Counters
from streamscore.telemetry.metrics import Metrics
from streamscore.windows.event_time import StreamClock

log = logging.getLogger(__name__)

MESSAGE_EVENTS = 4096  # events per bus message at most (< MAX_EVENTS_PER_MESSAGE)
REFRESH_INTERVAL = 0.2  # seconds between moves of the owned partitions to the cluster's time
RETRY_DELAY = 1.0
MODEL_ID = 0  # one model per cluster: history rows name it by this id
CONSUME_BATCH = 1024  # messages per fetch
PUBLISH_TIMEOUT = 5.0  # seconds for JetStream's acks (ms when it is up): then 503, retry
PUBLISH_USERS = 1000  # users per features write to the online store
COUNTERS_PREFIX = "counters."  # bucket keys of each node's ingest counters

assert MESSAGE_EVENTS < MAX_EVENTS_PER_MESSAGE


class ClusterNode:
    """Everything `serve --cluster` runs besides HTTP; the ingest route sees it as its service."""

    def __init__(self, settings: Settings, model: LoadedModel) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.started_at = time.time()
        self.scorer = Scorer(model, settings.torch_threads)
        self.decoder = EventDecoder(model.n_features, features_required=True)
        self.counters = Counters()
        self.metrics = Metrics()
        self.admission = Admission(
            settings.max_in_flight, settings.max_wait, settings.max_in_flight_bytes
        )
        self.dead_letters = DeadLetters()
        self.definitions = _definitions(settings.features)
        self.history = ClusterHistory(settings.store, settings.cluster_name, settings.store_timeout)
        self.owners: dict[int, PartitionOwner] = {}
        self.pipeline = self  # what the ingest route submits to
        self._consumers: dict[int, PartitionConsumer] = {}
        self._takeovers: dict[int, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()  # consumers of released partitions
        self._locks: dict[int, asyncio.Lock] = {}
        self._nc: Client | None = None
        self._cluster: Cluster | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self.stream_time: ClusterStreamTime | None = None
        self.leases: Leases | None = None
        self.online: OnlineStore | None = None
        self.takeover_seconds: dict[int, float] = {}
        self.takeover_from: dict[int, int] = {}  # the checkpoint's message (0: none)
        self.checkpointed: dict[int, int] = {}  # last message of each partition's checkpoint
        self._saved: dict[str, int] = {}
        self.stored_events = 0  # committed by this node's partitions since it started
        self.metrics.registry.register(ClusterCollector(self))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, address: str) -> None:
        """Join the cluster; `address` is where other nodes forward reads to this one."""
        s = self.settings
        await asyncio.to_thread(self._warm_up)
        self._nc = await nats.connect(
            s.cluster,
            name=f"streamscore-{self.node_id}",
            connect_timeout=2,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
        self._cluster = await open_cluster(
            self._nc, s.cluster_name, s.partitions, s.cluster_replicas, s.dedupe_horizon
        )
        self.stream_time = ClusterStreamTime(self._cluster)
        await self.stream_time.start()
        await self._load_counters()
        if s.online_store:
            self.online = OnlineStore(redis.from_url(s.online_store), s.cluster_name)
        self.leases = Leases(
            self._cluster,
            self.node_id,
            self._acquire,
            self._release,
            heartbeat_interval=s.heartbeat_interval,
            dead_after=s.dead_after,
            address=address,
        )
        await self.leases.start()
        self._refresher = asyncio.create_task(self._refresh(), name="cluster-time")
        self._checkpointer = asyncio.create_task(self._checkpoints(), name="checkpoints")

    async def stop(self) -> None:
        """Leave the cluster: hand every partition back (handled batches acknowledged)."""
        self.admission.close("shutting down")
        for task in (self._refresher, self._checkpointer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.leases is not None:
            await self.leases.stop(release=True)
        for partition in list(self._takeovers):
            await self._release(partition)
        await asyncio.gather(*self._stopping, return_exceptions=True)
        if self.stream_time is not None:
            await self.stream_time.stop()
        if self.online is not None:
            await self.online.client.aclose()
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.close()
        self.history.close()

    def problems(self) -> list[str]:
        found = []
        if self.admission.closing:
            found.append(self.admission.closing)
        if self._nc is None or not self._nc.is_connected:
            found.append("not connected to NATS")
        return found

    # -- ingest ----------------------------------------------------------------------------

    async def submit(self, batch: EventBatch) -> IngestResult:
        """Publish the events to their partitions; return once JetStream holds every one.

        Dedupe and lateness are decided here, for the whole cluster: an event with an id
        that JetStream already holds (within its duplicate window) is a duplicate, and the
        rest are late against the cluster's stream time, which they then move."""
        n = len(batch)
        if n == 0:
            return IngestResult()
        cluster, clock = self._require()
        await self.admission.acquire(n)
        try:
            fresh = _first_copies(batch.event_ids)
            key = idempotency_key.get()
            messages, members = _messages(batch.select(fresh), cluster.partitions, key)
            published = await publish_batch(
                cluster, messages, min(self.settings.ack_timeout, PUBLISH_TIMEOUT)
            )
            kept = np.flatnonzero(fresh)
            for positions, duplicate in zip(members, published.duplicated, strict=True):
                if duplicate:
                    fresh[kept[positions]] = False
            stamps = batch.timestamps[fresh]
            late = int(StreamClock(self.settings.window, clock.time).advance(stamps).sum())
            if len(stamps):
                try:
                    await clock.advance(float(stamps.max()))
                except nats.errors.Error as exc:  # stored, but the answer must say: retry
                    raise BusUnavailable(f"stream time not moved: {exc!r}; retry") from exc
        finally:
            self.admission.release(n)
        result = IngestResult(int(fresh.sum()), n - int(fresh.sum()), late)
        self.counters.events += result.processed
        self.counters.duplicates += result.duplicates
        self.counters.late += result.late
        return result

    def rejected(self, rejections: list[Rejection]) -> None:
        self.dead_letters.add(rejections)
        for r in rejections:
            self.metrics.rejected.labels(r.kind).inc()

    # -- ownership -------------------------------------------------------------------------

    async def _acquire(self, partition: int) -> None:
        """Called by the lease loop: the take-over runs beside it (it must return promptly)."""
        assert self.leases is not None
        epoch = self.leases.revision(partition)
        self._takeovers[partition] = asyncio.create_task(
            self._take_over(partition, epoch), name=f"take-over-{partition}"
        )

    async def _release(self, partition: int) -> None:
        """Stop owning at once; the consumer finishes the batch in hand in the background.

        The lease loop waits for this, and a loop that waits misses heartbeats: a batch
        committed after the release is harmless (a new owner's epoch fences it, and the new
        owner reads through its own consumer)."""
        task = self._takeovers.pop(partition, None)
        if task is not None and not task.done():
            task.cancel()
        self.owners.pop(partition, None)
        consumer = self._consumers.pop(partition, None)
        if consumer is not None:
            stopping = asyncio.create_task(consumer.stop(), name=f"stop-{partition}")
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    async def _take_over(self, partition: int, epoch: int) -> None:
        """Raise the partition's epoch, restore its last checkpoint, then consume it from the
        message after it: what the history already holds is only applied to the state
        (`_handle`), the rest committed. Failures are retried until the lease is released."""
        started = time.monotonic()
        assert self._cluster is not None
        while True:
            try:
                progress = await asyncio.to_thread(self.history.claim, partition, epoch)
                saved = await asyncio.to_thread(self.history.load_checkpoint, partition)
                break
            except Fenced:
                log.warning("partition %d: a newer owner exists; leaving it", partition)
                return
            except StoreUnavailable as exc:
                log.warning("partition %d: take-over failed, retrying: %r", partition, exc)
                await asyncio.sleep(RETRY_DELAY)
        owner = self._owner(partition, progress.last_msg, epoch)
        if saved is not None:
            try:
                await asyncio.to_thread(checkpoint.restore, owner, saved)
            except Exception as exc:  # e.g. another feature file than its writer's: replay all
                log.warning("partition %d: checkpoint not used: %r", partition, exc)
                owner = self._owner(partition, progress.last_msg, epoch)
        self.checkpointed[partition] = owner.last_msg
        restored = owner.last_msg
        consumer = PartitionConsumer(
            self._cluster,
            partition,
            lambda delivery: self._handle(owner, epoch, delivery),
            batch=CONSUME_BATCH,
            ack_wait=self.settings.cluster_ack_wait,
            resume_after=lambda: owner.last_msg,
            name=f"p{partition}-{self.node_id}-{epoch}",
        )
        while True:
            try:
                await consumer.start()
                break
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("partition %d: cannot consume yet, retrying: %r", partition, exc)
                await asyncio.sleep(RETRY_DELAY)
        self._consumers[partition] = consumer
        self.owners[partition] = owner
        while not owner.caught_up:
            await asyncio.sleep(0.01)
        self.takeover_seconds[partition] = time.monotonic() - started
        self.takeover_from[partition] = restored
        if self.online is not None:
            with contextlib.suppress(redis.RedisError):
                # Users the last owner wrote, whose windows may have emptied since.
                owner.online.shown.update(await self.online.users(partition))
                async with self._locks.setdefault(partition, asyncio.Lock()):
                    await self._publish_all(owner, force=True)
        log.info(
            "owning partition",
            extra={"partition": partition, "last_msg": owner.last_msg, "epoch": epoch},
        )

    def _warm_up(self) -> None:
        """Compile the windows' and features' kernels (numba) before joining: compiling
        holds the GIL for seconds, which in the first batch would stall the lease loop long
        enough for this node to fence itself."""
        owner = self._owner(-1, 0)
        n = self.scorer.n_features
        events = log_codec.decode(
            log_codec.encode(
                ["warm-a", "warm-b", "warm-a"],
                [None, None, None],
                np.array([1.0, 2.0, 3.0]),
                np.zeros(3, dtype=np.float32),
                np.zeros((3, n)),
                event_types=["purchase", None, "view"],
                attributes=[{"amount": 1.0, "device_type": "x"}, None, {"device_type": "y"}],
            )
        )
        owner.apply(owner.prepare([Message(1, events)]))
        owner.advance(1e6)
        owner.windows.get("warm-a")
        if owner.features is not None:
            for version in owner.features.versions:
                owner.features.table(["warm-a", "warm-b"], version)

    def _owner(self, partition: int, stored: int, epoch: int = 0) -> PartitionOwner:
        s = self.settings
        return PartitionOwner(
            partition, self.scorer, MODEL_ID, s.window, self.definitions, stored, epoch
        )

    async def _handle(self, owner: PartitionOwner, epoch: int, delivery: Delivery) -> None:
        messages = [
            _message(seq, data)
            for seq, data in zip(delivery.sequences, delivery.payloads, strict=True)
            if seq > owner.last_msg
        ]
        stored = [m for m in messages if m.sequence <= owner.stored]
        new = messages[len(stored) :]
        lock = self._locks.setdefault(owner.partition, asyncio.Lock())
        async with lock:
            if stored:  # the last owner's: in the history already, only the state needs them
                await asyncio.to_thread(owner.apply, await asyncio.to_thread(owner.prepare, stored))
            if not new:
                return
            prepared = await asyncio.to_thread(owner.prepare, new)
            try:
                await asyncio.to_thread(
                    self.history.commit,
                    owner.partition,
                    epoch,
                    owner.stored,
                    prepared.last_msg,
                    prepared.chunks,
                    len(prepared.events),
                )
            except Fenced:
                log.warning("partition %d: fenced by a newer owner", owner.partition)
                asyncio.get_running_loop().call_soon(self._forget, owner)
                raise
            await asyncio.to_thread(owner.apply, prepared)
            owner.stored = prepared.last_msg
            self.stored_events += len(prepared.events)
        assert self.stream_time is not None
        with contextlib.suppress(nats.errors.Error):
            # The ingesting node moved it already, unless it died between publish and move.
            await self.stream_time.advance(float(prepared.events.timestamps.max()))
        if self.online is not None and self.owners.get(owner.partition) is owner:
            with contextlib.suppress(redis.RedisError):  # (a released owner writes no more)
                async with lock:
                    await self._publish(owner, list(dict.fromkeys(prepared.events.user_ids)))

    def _forget(self, owner: PartitionOwner) -> None:
        """Stop owning a partition another node took (the lease loop will see it too), unless
        this node owns it again already: a stale consumer must not end its successor."""
        if self.owners.get(owner.partition) is owner:
            task = asyncio.get_running_loop().create_task(self._release(owner.partition))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    # -- cluster time and the online store ---------------------------------------------------

    async def _refresh(self) -> None:
        """Keep every owned partition at the cluster's stream time (and Redis with it), and
        this node's counters in the bucket."""
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            with contextlib.suppress(nats.errors.Error):
                await self._save_counters()
            assert self.stream_time is not None
            for partition, owner in list(self.owners.items()):
                if not owner.caught_up:
                    continue  # its replay must see the stream time it saw the first time
                async with self._locks.setdefault(partition, asyncio.Lock()):
                    owner.advance(self.stream_time.time)
                    if self.online is not None:
                        with contextlib.suppress(redis.RedisError):
                            await self._publish_all(owner)

    async def _publish_all(self, owner: PartitionOwner, force: bool = False) -> None:
        """Rewrite what stream time changed: medians once a window's cutoff moved (every user
        Redis shows with events, or should: some windows empty), features every
        `online_refresh` seconds (every bound moves with stream time).

        Every write of a partition runs under its lock (as `_publish` does), so that no batch
        or advance lands between reading the values and their bounds, and no older write can
        land after a newer one."""
        assert self.online is not None
        shown = owner.online
        if force or shown.cutoff != owner.clock.cutoff:
            cutoff = owner.clock.cutoff
            await self._publish_medians(owner, list(shown.shown.union(owner.windows.user_list())))
            shown.cutoff = cutoff
        now = time.monotonic()
        if owner.features is not None and (
            force
            or (
                shown.features_time != owner.clock.time
                and now - shown.features_at >= self.settings.online_refresh
            )
        ):
            shown.features_time = owner.clock.time
            shown.features_at = now
            await self._publish_features(owner, owner.features.user_list())

    async def _publish(self, owner: PartitionOwner, users: list[str]) -> None:
        """Write the users of a batch to the online store."""
        await self._publish_medians(owner, users)
        await self._publish_features(owner, users)

    async def _publish_medians(self, owner: PartitionOwner, users: list[str]) -> None:
        """Write the users' medians (count 0: the window emptied) to the online store."""
        assert self.online is not None
        if not users:
            return
        cutoff, now = owner.clock.cutoff, owner.clock.time
        got = [await asyncio.wrap_future(owner.windows.submit_get(u)) for u in users]
        await self.online.put_medians(
            owner.partition,
            users,
            np.array([math.nan if m is None else m for m, _ in got]),
            np.array([c for _, c in got]),
            cutoff,
            now,
        )
        shown = owner.online.shown
        for user, (_, count) in zip(users, got, strict=True):
            if count:
                shown.add(user)
            else:
                shown.discard(user)

    async def _publish_features(self, owner: PartitionOwner, users: list[str]) -> None:
        """Write every version's answer for the users, `PUBLISH_USERS` at a time (one hold of
        the engine's lock and one Redis round trip each)."""
        assert self.online is not None
        engine = owner.features
        if engine is None:
            return
        for version in engine.versions:
            for lo in range(0, len(users), PUBLISH_USERS):
                some = users[lo : lo + PUBLISH_USERS]
                table = await served(engine.submit_table(some, version, None))
                answers = encode_users(some, version, table)
                await self.online.put_features(
                    owner.partition, version, dict(zip(some, answers, strict=True))
                )

    async def _checkpoints(self) -> None:
        """Every `features_checkpoint_every` seconds, checkpoint each owned partition that moved
        (copied between two batches, encoded and saved off the loop)."""
        while True:
            await asyncio.sleep(self.settings.features_checkpoint_every)
            for partition, owner in list(self.owners.items()):
                if not owner.caught_up or owner.last_msg <= self.checkpointed.get(partition, 0):
                    continue
                async with self._locks.setdefault(partition, asyncio.Lock()):
                    taken = checkpoint.take(owner)
                try:
                    data = await asyncio.to_thread(checkpoint.encode, taken)
                    await asyncio.to_thread(
                        self.history.save_checkpoint, partition, owner.epoch, taken[0], data
                    )
                except StoreUnavailable as exc:  # Fenced too: the next owner has its own
                    log.warning("partition %d: checkpoint not saved: %s", partition, exc)
                    continue
                self.checkpointed[partition] = taken[0]

    def _counters_key(self) -> str:
        return f"{COUNTERS_PREFIX}{self.node_id}"

    async def _load_counters(self) -> None:
        """Go on from this node's last saved counters (a restart with the same --node-id)."""
        cluster, _ = self._require()
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            saved = json.loads((await cluster.kv.get(self._counters_key())).value or b"{}")
            self.counters.events = int(saved.get("events", 0))
            self.counters.late = int(saved.get("late", 0))
            self.counters.duplicates = int(saved.get("duplicates", 0))
        self._saved = self._counter_values()

    def _counter_values(self) -> dict[str, int]:
        c = self.counters
        return {"events": c.events, "late": c.late, "duplicates": c.duplicates}

    async def _save_counters(self) -> None:
        values = self._counter_values()
        if values != self._saved:
            cluster, _ = self._require()
            await cluster.kv.put(self._counters_key(), json.dumps(values).encode())
            self._saved = values

    async def cluster_counters(self) -> dict[str, int]:
        """Every node's saved ingest counters, summed (a killed node's last tick may be lost)."""
        cluster, _ = self._require()
        totals = {"events": 0, "late": 0, "duplicates": 0}
        try:
            keys = await cluster.kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        for key in keys:
            if key.startswith(COUNTERS_PREFIX):
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    saved = json.loads((await cluster.kv.get(key)).value or b"{}")
                    for name in totals:
                        totals[name] += int(saved.get(name, 0))
        return totals

    # -- reads -----------------------------------------------------------------------------

    def owner_of(self, user_id: str) -> tuple[int, PartitionOwner | None]:
        cluster, _ = self._require()
        partition = int(partition_of([user_id], cluster.partitions)[0])
        return partition, self.owners.get(partition)

    def owner_address(self, partition: int) -> str | None:
        assert self.leases is not None
        return self.leases.owner_address(partition)

    async def local(self, partition: int, read: Callable[[PartitionOwner], Any]) -> Any:
        """`read(owner)` on an owned partition, at the cluster's current stream time."""
        owner = self.owners[partition]
        _, clock = self._require()
        async with self._locks.setdefault(partition, asyncio.Lock()):
            owner.advance(clock.time)
        return await read(owner)

    async def stats(self) -> dict[str, Any]:
        _, clock = self._require()
        await self._save_counters()
        totals = await asyncio.to_thread(self.history.totals)
        ingested = await self.cluster_counters()
        return {
            "node_id": self.node_id,
            "partitions": sorted(p for p, o in self.owners.items() if o.caught_up),
            "catching_up": sorted(p for p, o in self.owners.items() if not o.caught_up),
            "stream_time": clock.time if math.isfinite(clock.time) else None,
            "node": {
                "ingested": self.counters.events,
                "late": self.counters.late,
                "duplicates": self.counters.duplicates,
                "rejected": self.counters.rejected,
                "users": sum(o.windows.users for o in self.owners.values()),
                "windowed_events": sum(o.windows.events for o in self.owners.values()),
                "takeovers": {
                    str(p): {"seconds": round(s, 3), "from_checkpoint": self.takeover_from[p]}
                    for p, s in self.takeover_seconds.items()
                },
            },
            "cluster": {
                "events": sum(p.events for p in totals.values()),
                "ingested": ingested["events"],
                "late": ingested["late"],
                "duplicates": ingested["duplicates"],
                "owners": self.leases.holders if self.leases is not None else [],
            },
        }

    def _require(self) -> tuple[Cluster, ClusterStreamTime]:
        if self._cluster is None or self.stream_time is None:
            raise RuntimeError("ClusterNode.start() was not called")
        return self._cluster, self.stream_time


def _messages(
    batch: EventBatch, partitions: int, key: str | None = None
) -> tuple[dict[int, list[tuple[str, bytes]]], list[np.ndarray]]:
    """The bus messages of a request by partition, and the events of each (publish order).

    An event with an `event_id` is a message of its own named by the id, so that JetStream
    stores it once however many requests carry it (the cluster-wide dedupe). Consecutive
    events of a partition without one share a message; with the request's `Idempotency-Key`
    it is named by the key and its first event's position in the request, so a retried
    request is stored once too; without a key it gets a fresh name, as a single node stores
    every request's events without ids. Within a partition
    messages follow the request's order, so stream order is arrival order."""
    parts = partition_of(batch.user_ids, partitions)
    has_id = np.fromiter((e is not None for e in batch.event_ids), bool, len(batch))
    order = np.lexsort((np.arange(len(batch)), parts))
    messages: dict[int, list[tuple[str, bytes]]] = {}
    members: list[np.ndarray] = []
    start = 0
    while start < len(order):
        first = order[start]
        stop = start + 1
        if not has_id[first]:
            while (
                stop < len(order)
                and stop - start < MESSAGE_EVENTS
                and parts[order[stop]] == parts[first]
                and not has_id[order[stop]]
            ):
                stop += 1
        idx = order[start:stop]
        start = stop
        picked = idx.tolist()
        payload = log_codec.encode(
            [batch.user_ids[i] for i in picked],
            [batch.event_ids[i] for i in picked],
            batch.timestamps[idx],
            np.zeros(len(idx), dtype=np.float32),
            batch.features[idx],
            event_types=None
            if batch.event_types is None
            else [batch.event_types[i] for i in picked],
            attributes=None if batch.attributes is None else [batch.attributes[i] for i in picked],
        )
        if has_id[first]:
            msg_id = f"e:{batch.event_ids[first]}"
        elif key is not None:
            digest = hashlib.sha256(key.encode()).hexdigest()
            msg_id = f"k:{digest}:{batch.index[first]}"
        else:
            msg_id = f"b:{uuid.uuid4().hex}"
        messages.setdefault(int(parts[first]), []).append((msg_id, payload))
        members.append(idx)
    # `order` runs by partition, so `members` already follows the publish order.
    return messages, members


def _first_copies(event_ids: list[str | None]) -> np.ndarray:
    """False for an event whose id an earlier event of the same request has.

    >>> _first_copies(["a", None, "a", None, "b"]).tolist()
    [True, True, False, True, True]
    """
    seen: set[str] = set()
    first = np.ones(len(event_ids), dtype=bool)
    for i, event_id in enumerate(event_ids):
        if event_id is not None:
            if event_id in seen:
                first[i] = False
            seen.add(event_id)
    return first


def _message(sequence: int, data: bytes) -> Message:
    return Message(sequence, log_codec.decode(data))


def _definitions(features: str) -> FeatureDefinitions | None:
    if features == "off":
        return None
    if features == "default":
        return feature_definitions.default()
    return feature_definitions.load(features)
