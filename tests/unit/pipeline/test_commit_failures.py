"""The commit step with a real SQLite store: a failure that is not the store's (a bug) fails
exactly the group's requests and releases exactly their event ids (issue 13, item 3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from streamscore.events import EventBatch, IngestResult
from streamscore.pipeline.commit import Committer
from streamscore.pipeline.dedupe import EventIdDeduper
from streamscore.pipeline.job import Job
from streamscore.store.sqlite import SQLiteStore
from streamscore.telemetry.counters import Counters
from streamscore.telemetry.metrics import Metrics
from streamscore.windows.event_time import StreamClock
from streamscore.windows.rolling_median import RollingMedians


class BuggyStore(SQLiteStore):
    """A store whose append hits a bug (not `StoreUnavailable`) while `broken` is set."""

    broken = True

    def append(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        if self.broken:
            raise RuntimeError("injected bug")
        super().append(*args, **kwargs)  # type: ignore[arg-type]


def batch(ids: list[str]) -> EventBatch:
    n = len(ids)
    return EventBatch(["u"] * n, np.full(n, 1.7e9), np.ones((n, 3)), list(ids), np.arange(n))


def test_a_bug_in_the_commit_step_releases_exactly_the_failed_ids(tmp_path: Path) -> None:
    store = BuggyStore(tmp_path / "events.db")
    deduper = EventIdDeduper(horizon=300)
    committer = Committer(
        store, StreamClock(300), [RollingMedians()], [], deduper, Counters(), Metrics(), 1,
        max_index_lag=10**9, index_wait=1.0, wake_indexer=lambda: None,
    )  # fmt: skip
    committer.start()

    async def commit(ids: list[str]) -> IngestResult:
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        claim = deduper.claim(ids, future)
        job = Job(batch(ids).select(claim.fresh), claim.duplicates, 0.0, future)
        job.scores[:] = 0.5
        committer.submit([job])
        return await asyncio.wait_for(future, 5)

    async def scenario() -> None:
        deduper.claim(["held-elsewhere"], object())  # another request's claim: untouched
        with pytest.raises(RuntimeError, match="injected bug"):
            await commit(["a", "b"])
        assert committer.alive and committer.crashes == 1
        store.broken = False
        assert await commit(["a", "b"]) == IngestResult(2, 0, 0)  # released: processed again
        assert deduper.claim(["held-elsewhere"], object()).waits  # still claimed

    try:
        asyncio.run(scenario())
    finally:
        committer.close()
        store.close()
