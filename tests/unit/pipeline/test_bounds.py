"""State bounded by size, not only by stream time (issue 13, item 7): with stream time standing
still (a backfill of old events with ids), the dedupe set and the event log stop growing at
their bounds, and a restart replays only what the log kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from streamscore.events import EventBatch, IngestResult
from streamscore.pipeline import commit
from streamscore.pipeline.commit import Committer
from streamscore.pipeline.dedupe import EventIdDeduper
from streamscore.pipeline.job import Job
from streamscore.store.sqlite import SQLiteStore
from streamscore.telemetry.counters import Counters
from streamscore.telemetry.metrics import Metrics
from streamscore.windows.event_time import StreamClock
from streamscore.windows.rolling_median import RollingMedians


def test_the_dedupe_set_forgets_the_oldest_beyond_its_bound() -> None:
    ids = EventIdDeduper(horizon=1e9, max_ids=100)
    for group in range(30):
        ids.committed([f"e{group}-{i}" for i in range(10)], stream_time=1000.0)
    assert len(ids) <= 100 and ids.evicted_early == 200
    assert ids.claim(["e0-0"], object()).fresh.tolist() == [True]  # forgotten: stored again
    assert ids.claim(["e29-9"], object()).fresh.tolist() == [False]  # still known


def test_the_log_stays_bounded_when_stream_time_stands_still(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "TRUNCATE_EVERY", 0.0)
    store = SQLiteStore(tmp_path / "events.db")
    deduper = EventIdDeduper(horizon=300)
    committer = Committer(
        store, StreamClock(300), [RollingMedians()], [], deduper, Counters(), Metrics(),
        store.register_model("m"), max_index_lag=10**9, index_wait=1.0,
        wake_indexer=lambda: None, max_log_events=200,
    )  # fmt: skip
    committer.start()

    async def commit_group(k: int) -> IngestResult:
        n = 10
        events = EventBatch(
            ["u"] * n, np.full(n, 1.7e9), np.ones((n, 3)), [f"{k}-{i}" for i in range(n)],
            np.arange(n),
        )  # fmt: skip
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        claim = deduper.claim(events.event_ids, future)
        job = Job(events.select(claim.fresh), claim.duplicates, 0.0, future)
        job.scores[:] = 0.5
        committer.submit([job])
        return await asyncio.wait_for(future, 5)

    try:
        for k in range(100):  # 1,000 events, all at one timestamp: nothing leaves the horizon
            assert asyncio.run(commit_group(k)).processed == 10
            store.index_pending()
    finally:
        committer.close()
    logged = sum(len(batch.user_ids) for batch in store.logged_batches())
    assert logged <= 220, logged  # the bound, plus the newest group
    assert committer.log_evicted_early >= 75
    assert store.history("u", -np.inf, np.inf, (-np.inf, -1), 10_000).__len__() == 1000
    store.close()
