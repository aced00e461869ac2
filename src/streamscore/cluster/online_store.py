"""The Redis online store: each user's current median, so any node answers any user's read.

Owners write after each handled batch; readers never cross nodes. One key per user,
`<cluster>:median:<user_id>`, holding 32 little-endian bytes (float64 median, int64 count,
float64 window start, float64 window end): a batch of any size is written by one `MSET`
(atomic, one round trip) and read by one `MGET`, with no per-field parsing.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        self.prefix = f"{check_cluster_name(cluster)}:median:"

    async def put_medians(
        self,
        user_ids: Sequence[str],
        medians: np.ndarray,
        counts: np.ndarray,
        window_start: float | np.ndarray,
        window_end: float | np.ndarray,
    ) -> None:
        """Store each user's median over its window (scalars or one value per user)."""
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
        await self.client.mset(
            {self.prefix + user: raw[i * size : (i + 1) * size] for i, user in enumerate(user_ids)}
        )

    async def get_medians(self, user_ids: Sequence[str]) -> list[OnlineMedian | None]:
        """Each user's stored median, or None for a user never written."""
        if not user_ids:
            return []
        values = await self.client.mget([self.prefix + user for user in user_ids])
        out: list[OnlineMedian | None] = []
        for value in values:
            if value is None:
                out.append(None)
                continue
            r = np.frombuffer(value, dtype=RECORD)[0]
            out.append(
                OnlineMedian(
                    float(r["median"]), int(r["count"]), float(r["start"]), float(r["end"])
                )
            )
        return out

    async def get_median(self, user_id: str) -> OnlineMedian | None:
        return (await self.get_medians([user_id]))[0]
