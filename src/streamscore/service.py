"""Assembles the pipeline's stages from `Settings`, restores state from the store, and owns
their lifecycle. The HTTP layer talks only to this object."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from streamscore.batch import Rejection
from streamscore.batching.controller import AdaptiveBatching, Batching, FixedBatching
from streamscore.batching.cost import CostModel
from streamscore.config import Settings
from streamscore.ingest.dead_letters import DeadLetters
from streamscore.ingest.decode import EventDecoder
from streamscore.ingest.dedupe import EventIdDeduper
from streamscore.pipeline.admission import Admission
from streamscore.pipeline.pipeline import Pipeline
from streamscore.score.model import create_model, load_model
from streamscore.score.scorer import Scorer
from streamscore.stats.counters import Counters
from streamscore.stats.metrics import Metrics
from streamscore.store.indexer import Indexer
from streamscore.store.open import open_store, sqlite_path
from streamscore.store.retention import Retention
from streamscore.windows.rolling_median import RollingMedians
from streamscore.windows.stream_time import StreamClock

log = logging.getLogger(__name__)

DEMO_MODEL = "demo_model.pt"


def demo_model_path(store_url: str) -> Path:
    """Next to a SQLite store; in the user's cache for a server store (it is deterministic)."""
    db = sqlite_path(store_url)
    if db is not None:
        return db.parent / DEMO_MODEL
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "streamscore" / DEMO_MODEL


def batching_policy(settings: Settings) -> Batching:
    cost = CostModel(settings.cost_per_batch, settings.cost_per_event, settings.cost_per_second)
    common = {"budget": settings.latency_budget, "max_batch": settings.max_batch, "cost": cost}
    if settings.batching == "adaptive":
        return AdaptiveBatching(**common)
    if settings.batching == "fixed":
        return FixedBatching(settings.batch_size, settings.batch_max_wait, **common)
    raise ValueError(f"--batching must be adaptive or fixed, not {settings.batching!r}")


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        model = load_model(self._model_path())
        self.scorer = Scorer(model, threads=settings.torch_threads)
        self.decoder = EventDecoder(model.n_features)
        self.store = open_store(settings.store, settings.store_timeout)
        self.model_id = self.store.register_model(model.version)
        self.counters = Counters()
        self.clock = StreamClock(settings.window)
        self.windows = RollingMedians()
        self.deduper = EventIdDeduper(max(settings.dedupe_horizon, settings.window))
        self.recovery_seconds = self._recover()
        self.admission = Admission(settings.max_in_flight, settings.max_wait)
        self.dead_letters = DeadLetters()
        self.metrics = Metrics()
        self.retention = Retention(self.store, settings.retention)
        self.indexer = Indexer(
            self.store,
            settings.index_interval,
            self.dead_letters,
            settings.dead_letter_limit,
            self.retention,
        )
        self.batching = batching_policy(settings)
        self.pipeline = Pipeline(
            self.scorer,
            self.store,
            self.windows,
            self.clock,
            self.deduper,
            self.counters,
            self.model_id,
            settings.max_batch,
            self.batching,
            self.admission,
            settings.max_index_lag,
            self.indexer.wake,
            self.metrics,
        )
        self.metrics.watch(self._gauges, self.counters, model.version)

    def _model_path(self) -> Path:
        if self.settings.model:
            return Path(self.settings.model)
        path = demo_model_path(self.settings.store)
        if not path.exists():
            create_model(path)
            log.info("created demo model", extra={"path": str(path)})
        return path

    def _recover(self) -> float:
        """Rebuild stream time, windows and the dedupe set from the store; returns seconds taken."""
        started = time.perf_counter()
        saved = self.store.counters()
        self.counters.events = int(saved["events"])
        self.counters.late = int(saved["late"])
        self.counters.duplicates = int(saved["duplicates"])
        self.clock.time = max(self.clock.time, float(saved["stream_time"]))
        cutoff = self.clock.cutoff
        for batch in self.store.logged_batches():
            live = batch.timestamps >= cutoff
            self.windows.insert(
                [u for u, k in zip(batch.user_ids, live, strict=True) if k],
                batch.timestamps[live],
                batch.scores[live],
            )
            self.deduper.load([e for e in batch.event_ids if e is not None], self.clock.time)
        return time.perf_counter() - started

    def rejected(self, rejections: list[Rejection]) -> None:
        """Keep rejected events as dead letters and count them by reason."""
        self.dead_letters.add(rejections)
        for r in rejections:
            self.metrics.rejected.labels(r.kind).inc()

    def _gauges(self) -> dict[str, float]:
        batching = self.batching.summary()
        policy, fit = batching["policy"], batching["fit"]
        p99, per_event = batching["p99_latency_ms"], batching["recent_cost_per_event"]
        return {
            "batching_target_size": policy["target_size"],  # type: ignore[index]
            "batching_max_wait_seconds": policy["max_wait_ms"] / 1000,  # type: ignore[index]
            "batching_p99_latency_seconds": (p99 or 0.0) / 1000,  # type: ignore[operator]
            "batching_arrival_rate_eps": batching["arrival_rate_eps"],  # type: ignore[dict-item]
            "batching_fit_intercept_seconds": fit["intercept_ms"] / 1000,  # type: ignore[index]
            "batching_fit_per_event_seconds": fit["per_event_us"] / 1e6,  # type: ignore[index]
            "batching_prediction_error": fit["prediction_error"] or 0.0,  # type: ignore[index]
            "batching_cost_per_event": per_event or 0.0,  # type: ignore[dict-item]
            "batching_cost": self.batching.total_cost,
            "in_flight_events": self.admission.in_flight,
            "index_lag_events": self.pipeline.index_lag,
            "window_users": self.windows.users,
            "window_events": self.windows.events,
            "dedupe_ids": len(self.deduper),
            "dead_letters_dropped": self.dead_letters.dropped,
            "retention_deleted_events": self.retention.deleted,
            "stream_time_seconds": self.clock.time if self.clock.time > 0 else 0.0,
        }

    def problems(self) -> list[str]:
        """Why the service should not get traffic now (empty when ready)."""
        found = []
        if not self.pipeline.store_ok:
            found.append("store: the last write failed")
        if self.admission.in_flight >= self.settings.max_in_flight:
            found.append("overloaded: the pipeline is full")
        if self.pipeline.index_lag > self.settings.max_index_lag:
            found.append("history index is behind")
        return found

    def start(self) -> None:
        self.pipeline.start()
        self.indexer.start()

    def close(self) -> None:
        """Commit what was submitted, index it, close the files."""
        self.pipeline.close()
        self.indexer.close()
        self.store.close()
