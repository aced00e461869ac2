from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as redis

from streamscore.cluster.online_store import OnlineMedian, OnlineStore

from .conftest import REDIS_URL

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(cluster_name: str) -> AsyncIterator[OnlineStore]:
    client = redis.Redis.from_url(REDIS_URL)
    yield OnlineStore(client, cluster_name)
    keys = [k async for k in client.scan_iter(match=f"{cluster_name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_round_trip(store: OnlineStore) -> None:
    rng = np.random.default_rng(3)
    users = [f"user-{i}" for i in range(2000)]
    medians = rng.normal(size=2000)
    counts = rng.integers(1, 500, size=2000)
    starts = rng.uniform(0, 1e9, size=2000)
    await store.put_medians(users, medians, counts, starts, 1e9 + 300)
    got = await store.get_medians(users)
    assert got == [
        OnlineMedian(float(m), int(c), float(s), 1e9 + 300)
        for m, c, s in zip(medians, counts, starts, strict=True)
    ]
    await store.put_medians(users[:1], np.array([np.nan]), np.array([0]), 5.0, 6.0)
    first = await store.get_median(users[0])
    assert first is not None and np.isnan(first.median) and first.count == 0
    assert await store.get_median("nobody") is None


async def test_clusters_do_not_share_keys(store: OnlineStore) -> None:
    other = OnlineStore(store.client, store.prefix.split(":")[0] + "x")
    await store.put_medians(["u"], np.array([1.0]), np.array([1]), 0.0, 1.0)
    assert await other.get_median("u") is None
    assert await store.get_median("u") == OnlineMedian(1.0, 1, 0.0, 1.0)
