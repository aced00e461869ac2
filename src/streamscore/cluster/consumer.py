"""Consuming one owned partition: a durable pull consumer that acks only what was handled.

The consumer is named `p<partition>` on the cluster's stream and outlives its owner, so the next
owner resumes where the last acknowledgement left off. Acknowledgement is cumulative
(`AckPolicy.ALL`: acking a batch's last message acks the whole batch) and happens only after the
handler returned, i.e. after the owner committed the batch's history: a node that dies mid-batch
leaves the batch unacknowledged, and JetStream redelivers it to the next owner once `ack_wait`
has passed. Delivery is therefore at least once, and the handler must be idempotent per event
(the history store dedupes by event id). A handler that raises gets its batch negatively
acknowledged, hence redelivered at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from streamscore.cluster.bus import Cluster
from streamscore.cluster.partitions import subject

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One fetched batch of a partition, in stream order."""

    partition: int
    payloads: list[bytes]
    first_sequence: int  # stream sequence of the first message (for checkpoints)
    last_sequence: int
    redelivered: bool  # some message was delivered before: its effects may already be stored


Handler = Callable[[Delivery], Awaitable[None]]


class PartitionConsumer:
    def __init__(
        self,
        cluster: Cluster,
        partition: int,
        handler: Handler,
        batch: int = 500,
        fetch_timeout: float = 1.0,
        ack_wait: float = 10.0,
        retry_delay: float = 0.5,
    ) -> None:
        self.cluster = cluster
        self.partition = partition
        self.handler = handler
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.ack_wait = ack_wait
        self.retry_delay = retry_delay
        self._stopping = asyncio.Event()
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def durable(self) -> str:
        return f"p{self.partition}"

    async def start(self) -> None:
        topic = subject(self.cluster.name, self.partition)
        self._sub = await self.cluster.js.pull_subscribe(
            topic,
            durable=self.durable,
            stream=self.cluster.name,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.ALL,
                ack_wait=self.ack_wait,
                max_ack_pending=max(1000, 2 * self.batch),
                deliver_policy=api.DeliverPolicy.ALL,
            ),
        )
        self._task = asyncio.create_task(self._run(self._sub), name=f"consume-{self.durable}")

    async def stop(self) -> None:
        """Return after the batch in hand (if any) is handled and acknowledged.

        Waits for a pending fetch to expire rather than cancelling it, so that no message is
        left delivered-but-unhandled (it would only come back after `ack_wait`).
        """
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error as err:
                log.warning("partition %d: unsubscribe failed: %r", self.partition, err)

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(self.batch, timeout=self.fetch_timeout)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.Error as err:
                log.warning("partition %d: fetch failed: %r", self.partition, err)
                await asyncio.sleep(self.retry_delay)
                continue
            await self._handle(msgs)

    async def _handle(self, msgs: list[Msg]) -> None:
        delivery = Delivery(
            partition=self.partition,
            payloads=[m.data for m in msgs],
            first_sequence=msgs[0].metadata.sequence.stream,
            last_sequence=msgs[-1].metadata.sequence.stream,
            redelivered=any(m.metadata.num_delivered > 1 for m in msgs),
        )
        try:
            await self.handler(delivery)
        except Exception:
            log.exception("partition %d: handler failed; batch will be redelivered", self.partition)
            try:
                for m in msgs:
                    await m.nak()
            except nats.errors.Error as err:
                log.warning(
                    "partition %d: nak failed (redelivery after ack_wait): %r", self.partition, err
                )
            await asyncio.sleep(self.retry_delay)
            return
        try:
            await msgs[-1].ack_sync(timeout=self.fetch_timeout)
        except nats.errors.Error as err:
            log.warning(
                "partition %d: ack failed (batch will be redelivered): %r", self.partition, err
            )
