import asyncio

import pytest

from streamscore.cluster.bus import Cluster, publish_batch
from streamscore.cluster.consumer import Delivery, PartitionConsumer

from .conftest import wait_until

pytestmark = pytest.mark.anyio


async def publish(cluster: Cluster, partition: int, start: int, stop: int) -> None:
    await publish_batch(cluster, {partition: [(f"m{i}", b"%d" % i) for i in range(start, stop)]})


async def pending(cluster: Cluster, consumer: PartitionConsumer) -> tuple[int, int]:
    """(messages delivered but not acknowledged, stream sequence of the ack floor)."""
    info = await cluster.js.consumer_info(cluster.name, consumer.durable)
    return info.num_ack_pending, info.ack_floor.stream_seq


async def test_acks_only_after_the_handler_returns(cluster: Cluster) -> None:
    await publish(cluster, 3, 0, 40)
    await publish(cluster, 4, 0, 5)  # another partition: never delivered here
    release = asyncio.Event()
    seen: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        await release.wait()

    consumer = PartitionConsumer(cluster, 3, handler, batch=100, fetch_timeout=0.2)
    await consumer.start()
    await wait_until(lambda: bool(seen), timeout=5)
    assert await pending(cluster, consumer) == (40, 0)  # in the handler: nothing acknowledged
    release.set()
    for _ in range(100):
        if (await pending(cluster, consumer))[0] == 0:
            break
        await asyncio.sleep(0.02)
    assert await pending(cluster, consumer) == (0, seen[0].last_sequence)
    assert [int(p) for p in seen[0].payloads] == list(range(40))
    assert not seen[0].redelivered
    await consumer.stop()


async def test_a_failed_batch_is_redelivered_and_a_new_owner_resumes(cluster: Cluster) -> None:
    await publish(cluster, 1, 0, 30)
    handled: list[int] = []
    failures = [RuntimeError("history store down")]
    redelivered: list[bool] = []

    async def handler(delivery: Delivery) -> None:
        if failures:
            raise failures.pop()
        redelivered.append(delivery.redelivered)
        handled.extend(int(p) for p in delivery.payloads)

    first = PartitionConsumer(cluster, 1, handler, batch=20, fetch_timeout=0.2, retry_delay=0.05)
    await first.start()
    await wait_until(lambda: len(handled) == 30, timeout=5)
    await first.stop()
    assert handled == list(range(30))
    assert redelivered[0]

    await publish(cluster, 1, 30, 45)
    second = PartitionConsumer(cluster, 1, handler, batch=20, fetch_timeout=0.2)
    await second.start()
    await wait_until(lambda: len(handled) == 45, timeout=5)
    await second.stop()
    assert handled == list(range(45))  # nothing handled twice once acknowledged


async def test_stop_returns_promptly_when_idle(cluster: Cluster) -> None:
    async def handler(delivery: Delivery) -> None:
        raise AssertionError("nothing was published")

    consumer = PartitionConsumer(cluster, 0, handler, fetch_timeout=0.3)
    await consumer.start()
    await asyncio.sleep(0.1)
    await asyncio.wait_for(consumer.stop(), timeout=1.0)


async def test_an_idle_consumer_still_delivers_later_messages(cluster: Cluster) -> None:
    """Fetches that time out (nothing published) leave the consumer running."""
    handled: list[int] = []

    async def handler(delivery: Delivery) -> None:
        handled.extend(int(p) for p in delivery.payloads)

    consumer = PartitionConsumer(cluster, 2, handler, fetch_timeout=0.1)
    await consumer.start()
    await asyncio.sleep(0.5)  # several empty fetches
    await publish(cluster, 2, 0, 5)
    await wait_until(lambda: len(handled) == 5, timeout=5)
    await consumer.stop()


async def test_a_resuming_consumer_delivers_in_order_after_a_failure(cluster: Cluster) -> None:
    """With `resume_after`, a failed batch is delivered again from the caller's own record,
    before anything after it, and two owners' consumers never share messages."""
    await publish(cluster, 6, 0, 30)
    handled: list[int] = []
    failures = [RuntimeError("history store down")]

    async def handler(delivery: Delivery) -> None:
        if failures:
            raise failures.pop()
        handled.extend(int(p) for p in delivery.payloads)

    last = {"seq": 0}

    async def recording(delivery: Delivery) -> None:
        await handler(delivery)
        last["seq"] = delivery.last_sequence

    first = PartitionConsumer(
        cluster, 6, recording, batch=10, fetch_timeout=0.1, retry_delay=0.05,
        resume_after=lambda: last["seq"], name="p6-a-1",
    )  # fmt: skip
    other = PartitionConsumer(
        cluster, 6, handler, batch=10, fetch_timeout=0.1, resume_after=lambda: 10**9,
        name="p6-b-2",
    )  # fmt: skip
    await other.start()  # another owner's consumer, from far ahead: takes nothing of ours
    await first.start()
    await wait_until(lambda: len(handled) == 30, timeout=5)
    await first.stop()
    await other.stop()
    assert handled == list(range(30))
