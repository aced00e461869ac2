"""The cluster's durable log: one JetStream stream, one key-value bucket, an idempotent publisher.

A cluster named `NAME` owns, on the NATS server:
- the stream `NAME`, file storage, subjects `NAME.events.<partition>`, replicas as configured
  (1 on a single server; 3 in production, so that acknowledged events survive a server's loss);
- the key-value bucket `NAME-meta` (history 1), holding the partition count (`config.partitions`),
  node heartbeats, partition leases and stream time.

Publishing is idempotent within the stream's duplicate window (`DUPLICATE_WINDOW`, 2 minutes by
default): JetStream stores a message whose `Nats-Msg-Id` it has already seen in the last window
only once and acknowledges it as a duplicate, so a client that retries a request whose response
it lost (within the window) does not count its events twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from streamscore.cluster.partitions import DEFAULT_PARTITIONS, check_cluster_name, subject
from streamscore.store.base import StoreUnavailable

DUPLICATE_WINDOW = 120.0
PARTITIONS_KEY = "config.partitions"


class BusUnavailable(StoreUnavailable):
    """NATS or JetStream did not acknowledge in time: the caller cannot promise durability (503).

    In a cluster the bus is where an acknowledged event is kept, so this is the cluster's
    `StoreUnavailable`."""


class PartitionCountMismatch(Exception):
    """This node was configured with another partition count than the cluster was created with."""


def bucket_name(cluster: str) -> str:
    return f"{cluster}-meta"


@dataclass(frozen=True, slots=True)
class Cluster:
    """Handles on one cluster's stream and bucket, shared by the other cluster modules."""

    name: str
    partitions: int
    nc: Client
    js: JetStreamContext
    kv: KeyValue


async def open_cluster(
    nc: Client,
    name: str,
    partitions: int = DEFAULT_PARTITIONS,
    replicas: int = 1,
    duplicate_window: float = DUPLICATE_WINDOW,
) -> Cluster:
    """Create the cluster's stream and bucket if absent, then check the partition count.

    An existing stream is used as it is (replicas and duplicate window are fixed at creation).
    Raises PartitionCountMismatch if the cluster was created with another P.
    """
    check_cluster_name(name)
    js = nc.jetstream()
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=[f"{name}.events.*"],
                storage=api.StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=duplicate_window,
            )
        )
    try:
        kv = await js.key_value(bucket_name(name))
    except nats.js.errors.BucketNotFoundError:
        kv = await js.create_key_value(
            bucket=bucket_name(name), history=1, replicas=replicas, storage=api.StorageType.FILE
        )
    try:
        await kv.create(PARTITIONS_KEY, str(partitions).encode())
    except nats.js.errors.KeyWrongLastSequenceError:
        recorded = int((await kv.get(PARTITIONS_KEY)).value or b"0")
        if recorded != partitions:
            raise PartitionCountMismatch(
                f"cluster {name!r} has {recorded} partitions; this node was given {partitions}"
            ) from None
    return Cluster(name=name, partitions=partitions, nc=nc, js=js, kv=kv)


async def delete_cluster(cluster: Cluster) -> None:
    """Remove the stream and bucket (tests, and tearing a cluster down for good)."""
    await cluster.js.delete_stream(cluster.name)
    await cluster.js.delete_key_value(bucket_name(cluster.name))


@dataclass(frozen=True, slots=True)
class Published:
    stored: int  # messages JetStream stored for the first time
    duplicates: int  # messages it had already stored under the same id (a retried request)
    duplicated: tuple[bool, ...] = ()  # per message, in publish order: was it a duplicate


async def publish_batch(
    cluster: Cluster,
    messages: Mapping[int, Sequence[tuple[str, bytes]]],
    timeout: float = 5.0,
) -> Published:
    """Publish (msg_id, payload) pairs to their partitions; return once JetStream acked them all.

    Publishes are pipelined (all sent, then all acks awaited), so a request costs about one round
    trip, not one per message. Message ids must be unique per message within the duplicate window
    and identical on a retry (e.g. derived from the request id or the events' ids).
    Raises BusUnavailable if NATS is disconnected or any ack is missing after `timeout` seconds:
    some messages may then be stored, which is why a retry with the same ids is safe.
    """
    if not cluster.nc.is_connected:
        raise BusUnavailable("not connected to NATS")
    acks: list[asyncio.Future[api.PubAck]] = []
    try:
        async with asyncio.timeout(timeout):
            for partition, items in messages.items():
                topic = subject(cluster.name, partition)
                for msg_id, payload in items:
                    acks.append(
                        await cluster.js.publish_async(
                            topic, payload, headers={api.Header.MSG_ID: msg_id}
                        )
                    )
            done = await asyncio.gather(*acks)
    except (TimeoutError, nats.errors.Error) as err:
        for ack in acks:
            ack.cancel()
        raise BusUnavailable(f"JetStream did not acknowledge: {err!r}") from err
    duplicated = tuple(bool(ack.duplicate) for ack in done)
    duplicates = sum(duplicated)
    return Published(len(done) - duplicates, duplicates, duplicated)
