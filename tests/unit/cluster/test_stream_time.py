import asyncio
import random

import pytest

from streamscore.cluster.bus import Cluster, open_cluster
from streamscore.cluster.stream_time import KEY, ClusterStreamTime

from .conftest import connect, wait_until

pytestmark = pytest.mark.anyio


async def test_concurrent_advances_keep_the_maximum(cluster: Cluster) -> None:
    connections = [await connect() for _ in range(3)]
    clocks = [
        ClusterStreamTime(await open_cluster(nc, cluster.name, partitions=8), resync_interval=0.2)
        for nc in connections
    ]
    for clock in clocks:
        await clock.start()
    rng = random.Random(7)
    stamps = [rng.uniform(1e9, 1e9 + 1000) for _ in range(120)]
    observed: list[list[float]] = [[] for _ in clocks]

    async def advance(i: int, stamp: float) -> None:
        before = clocks[i].time
        after = await clocks[i].advance(stamp)
        assert after >= max(stamp, before)
        observed[i].append(after)

    await asyncio.gather(*(advance(i % 3, s) for i, s in enumerate(stamps)))
    assert float((await cluster.kv.get(KEY)).value or b"nan") == max(stamps)
    await wait_until(lambda: all(c.time == max(stamps) for c in clocks), timeout=3)
    assert await clocks[0].advance(min(stamps)) == max(stamps)  # never goes back
    for clock, nc in zip(clocks, connections, strict=True):
        await clock.stop()
        await nc.close()


async def test_a_watching_node_follows_the_others(cluster: Cluster) -> None:
    nc = await connect()
    watcher = ClusterStreamTime(await open_cluster(nc, cluster.name, partitions=8))
    await watcher.start()
    writer = ClusterStreamTime(cluster)
    assert await writer.advance(1000.5) == 1000.5
    await wait_until(lambda: watcher.time == 1000.5, timeout=2)
    await writer.advance(2000.0)
    await wait_until(lambda: watcher.time == 2000.0, timeout=2)
    await watcher.stop()
    await nc.close()
