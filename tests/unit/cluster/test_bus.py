import time

import nats.js.errors
import pytest
from nats.js import api

from streamscore.cluster.bus import (
    BusUnavailable,
    Cluster,
    PartitionCountMismatch,
    bucket_name,
    delete_cluster,
    open_cluster,
    publish_batch,
)
from streamscore.cluster.partitions import partition_of, subject

from .conftest import PrivateNats, connect

pytestmark = pytest.mark.anyio


def request(
    user_ids: list[str], request_id: str, partitions: int
) -> dict[int, list[tuple[str, bytes]]]:
    """One message per event, grouped by partition, ids derived from the request: retry-safe."""
    messages: dict[int, list[tuple[str, bytes]]] = {}
    for i, (user, p) in enumerate(
        zip(user_ids, partition_of(user_ids, partitions).tolist(), strict=True)
    ):
        messages.setdefault(p, []).append((f"{request_id}:{i}", user.encode()))
    return messages


async def test_open_cluster_creates_a_file_stream_and_records_p(cluster: Cluster) -> None:
    info = await cluster.js.stream_info(cluster.name)
    assert info.config.storage == api.StorageType.FILE
    assert info.config.subjects == [f"{cluster.name}.events.*"]
    assert info.config.duplicate_window == 120.0
    assert (await cluster.kv.get("config.partitions")).value == b"8"
    other = await connect()
    try:
        again = await open_cluster(other, cluster.name, partitions=8)
        assert again.partitions == 8
        with pytest.raises(PartitionCountMismatch):
            await open_cluster(other, cluster.name, partitions=64)
    finally:
        await other.close()


async def test_a_retried_request_is_stored_once(cluster: Cluster) -> None:
    users = [f"user-{i % 37}" for i in range(500)]
    first = await publish_batch(cluster, request(users, "req-1", cluster.partitions))
    assert (first.stored, first.duplicates) == (500, 0)
    retry = await publish_batch(cluster, request(users, "req-1", cluster.partitions))
    assert (retry.stored, retry.duplicates) == (0, 500)
    other = await publish_batch(cluster, request(users[:10], "req-2", cluster.partitions))
    assert (other.stored, other.duplicates) == (10, 0)
    info = await cluster.js.stream_info(cluster.name, subjects_filter=">")
    expected = {subject(cluster.name, p): len(m) for p, m in request(users, "x", 8).items()}
    for p, m in request(users[:10], "x", 8).items():
        expected[subject(cluster.name, p)] += len(m)
    assert info.state.messages == 510
    assert info.state.subjects == expected


async def test_a_closed_connection_is_unavailable(cluster_name: str) -> None:
    nc = await connect()
    c = await open_cluster(nc, cluster_name, partitions=4)
    await delete_cluster(c)
    await nc.close()
    with pytest.raises(BusUnavailable):
        await publish_batch(c, {0: [("a", b"x")]})


async def test_a_missing_stream_is_unavailable(cluster: Cluster) -> None:
    await cluster.js.delete_stream(cluster.name)
    with pytest.raises(BusUnavailable):
        await publish_batch(cluster, {0: [("a", b"x")]}, timeout=1.0)
    await cluster.js.add_stream(name=cluster.name, subjects=[f"{cluster.name}.events.*"])


async def test_a_dead_server_is_unavailable_within_the_timeout(private_nats: PrivateNats) -> None:
    nc = await connect(private_nats.url)
    c = await open_cluster(nc, "dead", partitions=4)
    private_nats.stop()
    start = time.monotonic()
    with pytest.raises(BusUnavailable):
        await publish_batch(c, {0: [("a", b"x")], 1: [("b", b"y")]}, timeout=1.0)
    assert time.monotonic() - start < 2.0
    await nc.close()


async def test_cleanup_removes_stream_and_bucket(cluster_name: str) -> None:
    nc = await connect()
    c = await open_cluster(nc, cluster_name)
    await delete_cluster(c)
    with pytest.raises(nats.js.errors.NotFoundError):
        await c.js.stream_info(cluster_name)
    with pytest.raises(nats.js.errors.BucketNotFoundError):
        await c.js.key_value(bucket_name(cluster_name))
    await nc.close()
