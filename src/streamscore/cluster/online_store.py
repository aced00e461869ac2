"""The Redis online store: each user's current median and features, so any node answers any
user's read without asking the owner.

Owners write after each handled batch and whenever the cluster's stream time moves their
windows; readers never cross nodes. One Redis hash per partition and kind, so a new owner
finds every user the last one wrote (`users`) and a batch is one `HSET` (one round trip):
- `<cluster>:median:<partition>`: user -> 32 little-endian bytes (float64 median, int64 count,
  float64 window start, float64 window end), no per-field parsing;
- `<cluster>:features:<version>:<partition>`: user -> the JSON answer of
  `GET /users/{id}/features?version=<version>` (all of the version's features).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import redis.asyncio as redis

from streamscore.cluster.partitions import check_cluster_name

RECORD = np.dtype([("median", "<f8"), ("count", "<i8"), ("start", "<f8"), ("end", "<f8")])


@dataclass(frozen=True, slots=True)
class OnlineMedian:
    median: float
    count: int
    window_start: float
    window_end: float


class OnlineStore:
    def __init__(self, client: redis.Redis, cluster: str) -> None:
        self.client = client
        self.cluster = check_cluster_name(cluster)

    def _medians(self, partition: int) -> str:
        return f"{self.cluster}:median:{partition}"

    def _features(self, version: str, partition: int) -> str:
        return f"{self.cluster}:features:{version}:{partition}"

    async def put_medians(
        self,
        partition: int,
        user_ids: Sequence[str],
        medians: np.ndarray,
        counts: np.ndarray,
        window_start: float | np.ndarray,
        window_end: float | np.ndarray,
    ) -> None:
        """Store each user's median over its window (scalars or one value per user). A user
        whose window is empty (count 0) is removed instead: it then reads as never written,
        answered at the reader's stream time. A stored empty record would keep the bounds of
        its write, and nothing rewrites a user without events when stream time moves on."""
        n = len(user_ids)
        if n == 0:
            return
        records = np.empty(n, dtype=RECORD)
        records["median"] = medians
        records["count"] = counts
        records["start"] = np.broadcast_to(window_start, n)
        records["end"] = np.broadcast_to(window_end, n)
        raw = records.tobytes()
        size = RECORD.itemsize
        key = self._medians(partition)
        live = np.asarray(counts) > 0
        pipeline = self.client.pipeline(transaction=False)  # one round trip
        if live.any():
            pipeline.hset(
                key,
                mapping={
                    user: raw[i * size : (i + 1) * size]
                    for i, user in enumerate(user_ids)
                    if live[i]
                },
            )
        if not live.all():
            pipeline.hdel(key, *(u for i, u in enumerate(user_ids) if not live[i]))
        await pipeline.execute()

    async def get_median(self, partition: int, user_id: str) -> OnlineMedian | None:
        """The user's stored median, or None for a user never written."""
        value = await self.client.hget(self._medians(partition), user_id)
        if value is None:
            return None
        r = np.frombuffer(value, dtype=RECORD)[0]
        return OnlineMedian(float(r["median"]), int(r["count"]), float(r["start"]), float(r["end"]))

    async def put_features(
        self, partition: int, version: str, answers: Mapping[str, bytes]
    ) -> None:
        """Store each user's features answer (JSON) of `version`."""
        if answers:
            await self.client.hset(self._features(version, partition), mapping=dict(answers))

    async def get_features(self, partition: int, version: str, user_id: str) -> bytes | None:
        return await self.client.hget(self._features(version, partition), user_id)

    async def users(self, partition: int) -> list[str]:
        """Every user with a stored median (a non-empty window) in `partition`."""
        return [u.decode() for u in await self.client.hkeys(self._medians(partition))]
