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
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
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
    sequences: list[int]  # the stream sequence of each message
    first_sequence: int  # stream sequence of the first message (for checkpoints)
    last_sequence: int
    redelivered: bool  # some message was delivered before: its effects may already be stored


Handler = Callable[[Delivery], Awaitable[None]]
INACTIVE = 60.0  # seconds without a fetch before the server removes a resuming consumer


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
        resume_after: Callable[[], int] | None = None,
        name: str | None = None,
    ) -> None:
        """With `resume_after` (the last stream sequence the caller has stored), the consumer
        is created anew at every start and after every failed batch, delivering from the next
        sequence on: the caller's own record, not the consumer's ack floor, says where to
        resume, and nothing is delivered out of order (a redelivery after `ack_wait` could
        otherwise come after later messages). Such a consumer should have a `name` of its
        own owner: a deposed owner that has not noticed yet must never take messages from
        the consumer of the new one. It is removed when stopped, or by the server after
        `INACTIVE` seconds without a fetch (an owner that died)."""
        self.resume_after = resume_after
        self.name = name
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
        return self.name or f"p{self.partition}"

    async def start(self) -> None:
        self._sub = await self._subscribe()
        self._task = asyncio.create_task(self._run(), name=f"consume-{self.durable}")

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=max(1000, 2 * self.batch),
            deliver_policy=api.DeliverPolicy.ALL,
        )
        if self.resume_after is not None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.cluster.js.delete_consumer(self.cluster.name, self.durable)
            config.inactive_threshold = INACTIVE
            after = self.resume_after()
            if after > 0:
                config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = after + 1
        return await self.cluster.js.pull_subscribe(
            subject(self.cluster.name, self.partition),
            durable=self.durable,
            stream=self.cluster.name,
            config=config,
        )

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
        if self.resume_after is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.cluster.js.delete_consumer(self.cluster.name, self.durable)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            sub = self._sub
            try:
                if sub is None:
                    sub = self._sub = await self._subscribe()
                msgs = await sub.fetch(self.batch, timeout=self.fetch_timeout)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when idle
                continue
            except nats.errors.Error as err:
                log.warning("partition %d: fetch failed: %r", self.partition, err)
                if self.resume_after is not None:
                    self._sub = None
                await asyncio.sleep(self.retry_delay)
                continue
            if msgs:
                await self._handle(msgs)

    async def _resubscribe(self) -> None:
        """Drop the subscription; the next round creates the consumer at `resume_after`."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        await asyncio.sleep(self.retry_delay)

    async def _handle(self, msgs: list[Msg]) -> None:
        delivery = Delivery(
            partition=self.partition,
            payloads=[m.data for m in msgs],
            sequences=[m.metadata.sequence.stream for m in msgs],
            first_sequence=msgs[0].metadata.sequence.stream,
            last_sequence=msgs[-1].metadata.sequence.stream,
            redelivered=any(m.metadata.num_delivered > 1 for m in msgs),
        )
        try:
            await self.handler(delivery)
        except Exception:
            log.exception("partition %d: handler failed; batch will be redelivered", self.partition)
            if self.resume_after is not None:
                await self._resubscribe()
                return
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
