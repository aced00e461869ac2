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
    await store.put_medians(5, users, medians, counts, starts, 1e9 + 300)
    got = [await store.get_median(5, u) for u in users]
    assert got == [
        OnlineMedian(float(m), int(c), float(s), 1e9 + 300)
        for m, c, s in zip(medians, counts, starts, strict=True)
    ]
    # An emptied window removes the user: a stored empty record would keep the bounds of its
    # write while stream time moves on (readers answer a missing user at their stream time).
    await store.put_medians(
        5, users[:2], np.array([np.nan, 7.0]), np.array([0, 3]), 5.0, np.array([6.0, 7.0])
    )
    assert await store.get_median(5, users[0]) is None
    assert await store.get_median(5, users[1]) == OnlineMedian(7.0, 3, 5.0, 7.0)
    assert await store.get_median(5, "nobody") is None
    assert await store.get_median(4, users[1]) is None  # another partition's hash
    assert sorted(await store.users(5)) == sorted(users[1:])


async def test_features_round_trip(store: OnlineStore) -> None:
    await store.put_features(2, "v1", {"a": b'{"user_id":"a"}', "b": b"{}"})
    assert await store.get_features(2, "v1", "a") == b'{"user_id":"a"}'
    assert await store.get_features(2, "v2", "a") is None
    assert await store.get_features(2, "v1", "c") is None


async def test_clusters_do_not_share_keys(store: OnlineStore) -> None:
    other = OnlineStore(store.client, store.cluster + "x")
    await store.put_medians(0, ["u"], np.array([1.0]), np.array([1]), 0.0, 1.0)
    assert await other.get_median(0, "u") is None
    assert await store.get_median(0, "u") == OnlineMedian(1.0, 1, 0.0, 1.0)
