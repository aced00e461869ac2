"""The pipeline without HTTP: real admission, dedupe, scoring stage (demo model), commit step
and SQLite store, driven from one event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamscore.events import EventBatch, IngestResult
from streamscore.pipeline.admission import Admission
from streamscore.pipeline.commit import Committer
from streamscore.pipeline.dedupe import EventIdDeduper
from streamscore.pipeline.pipeline import Pipeline
from streamscore.scoring.cost import CostModel
from streamscore.scoring.model import create_model, load_model
from streamscore.scoring.policy import AdaptivePolicy
from streamscore.scoring.scorer import Scorer
from streamscore.scoring.stage import ScoringStage
from streamscore.store.base import Store
from streamscore.store.open import open_store
from streamscore.telemetry.counters import Counters
from streamscore.telemetry.metrics import Metrics
from streamscore.windows.event_time import StreamClock
from streamscore.windows.rolling_median import RollingMedians

NOW = 1_800_000_000.0


class Parts:
    def __init__(self, root: Path, store_timeout: float = 5.0) -> None:
        self.root = root
        self.scorer = Scorer(load_model(create_model(root / "model.pt")))
        self.store: Store = open_store(f"sqlite:///{root / 'events.db'}", store_timeout)
        model_id = self.store.register_model(self.scorer.version)
        self.windows = RollingMedians()
        self.clock = StreamClock(300.0)
        self.deduper = EventIdDeduper(300.0)
        self.counters = Counters()
        self.committer = Committer(
            self.store,
            self.clock,
            [self.windows],
            [],
            self.deduper,
            self.counters,
            Metrics(),
            model_id,
            max_index_lag=10**9,
            index_wait=1.0,
            wake_indexer=lambda: None,
        )
        policy = AdaptivePolicy(budget=0.02, max_batch=4096, cost=CostModel(1e-7, 1e-10, 1.4e-5))
        self.stage = ScoringStage(
            self.scorer,
            policy,
            4096,
            self.committer.submit,
            lambda job, exc: self.committer.fail([job], exc),
        )
        self.pipeline = Pipeline(
            Admission(100_000, 1.0), self.deduper, self.stage, self.committer, ack_timeout=10.0
        )


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    built = Parts(tmp_path)
    built.pipeline.start()
    yield built
    built.pipeline.close()
    built.store.close()


def batch(users: list[str], ts: list[float], ids: list[str | None] | None = None) -> EventBatch:
    n = len(users)
    features = np.arange(n * 3, dtype=np.float64).reshape(n, 3) / 10
    return EventBatch(users, np.array(ts), features, ids or [None] * n, np.arange(n))


def test_concurrent_requests_are_scored_committed_and_windowed(parts: Parts) -> None:
    requests = [batch([f"u{i % 7}"] * 5, [NOW + i] * 5) for i in range(40)]

    async def run() -> list[IngestResult]:
        return await asyncio.gather(*(parts.pipeline.submit(b) for b in requests))

    results = asyncio.run(run())
    assert [r.processed for r in results] == [5] * 40
    assert parts.counters.events == 200 and parts.committer.index_lag == 200
    expected = parts.scorer.score(np.concatenate([b.features for b in requests]).astype("f4"))
    users = np.array([u for b in requests for u in b.user_ids])
    for user in {f"u{i}" for i in range(7)}:
        value, count = parts.windows.get(user)
        assert count == (users == user).sum()
        assert value == pytest.approx(float(np.median(expected[users == user])), abs=1e-6)


def test_late_events_are_stored_but_not_windowed(parts: Parts) -> None:
    async def run() -> tuple[IngestResult, IngestResult]:
        first = await parts.pipeline.submit(batch(["a"], [NOW]))
        return first, await parts.pipeline.submit(batch(["a", "a"], [NOW - 301, NOW - 299]))

    first, second = asyncio.run(run())
    assert (first.late, second.late, second.processed) == (0, 1, 2)
    assert parts.windows.get("a")[1] == 2 and parts.counters.late == 1


def test_duplicate_ids_within_and_across_requests(parts: Parts) -> None:
    async def run() -> list[IngestResult]:
        one = await parts.pipeline.submit(batch(["a", "a"], [NOW, NOW], ["x", "x"]))
        two = await parts.pipeline.submit(batch(["a", "b"], [NOW, NOW], ["x", "y"]))
        return [one, two]

    one, two = asyncio.run(run())
    assert (one.processed, one.duplicates) == (1, 1)
    assert (two.processed, two.duplicates) == (1, 1)
    assert parts.counters.duplicates == 2 and parts.counters.events == 2


def test_a_copy_in_flight_waits_for_its_original(parts: Parts) -> None:
    """Both copies submitted together: one processes the event, the other counts a duplicate
    only once the original is durable."""

    async def run() -> list[IngestResult]:
        return await asyncio.gather(
            parts.pipeline.submit(batch(["a"], [NOW], ["same"])),
            parts.pipeline.submit(batch(["a"], [NOW], ["same"])),
        )

    results = asyncio.run(run())
    assert sorted((r.processed, r.duplicates) for r in results) == [(0, 1), (1, 0)]
    assert parts.counters.events == 1


def test_a_failed_write_releases_exactly_its_ids(tmp_path: Path) -> None:
    parts = Parts(tmp_path, store_timeout=0.2)
    parts.pipeline.start()
    try:
        lock = sqlite3.connect(tmp_path / "events.ingest.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the log: appends fail

        async def refused() -> BaseException | IngestResult:
            try:
                return await parts.pipeline.submit(batch(["a"], [NOW], ["retry-me"]))
            except Exception as exc:
                return exc

        outcome = asyncio.run(refused())
        assert isinstance(outcome, Exception) and not parts.committer.store_ok
        lock.execute("ROLLBACK")
        lock.close()
        again = asyncio.run(parts.pipeline.submit(batch(["a"], [NOW], ["retry-me"])))
        assert (again.processed, again.duplicates) == (1, 0)  # the retry is not a "duplicate"
        assert parts.committer.store_ok and len(parts.deduper) == 1
    finally:
        parts.pipeline.close()
        parts.store.close()
