"""Wiring only: build the pipeline's stages from `Settings`, restore their state from the
store, and own their lifecycle. The HTTP layer talks only to this object."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from streamscore.config import Settings
from streamscore.drift.watch import DriftWatch, input_names
from streamscore.events import EventBatch, Rejection
from streamscore.experiments.book import ExperimentBook, ExperimentObserver
from streamscore.features import definitions as feature_definitions
from streamscore.features import model_inputs
from streamscore.features.model_inputs import InputsError, ModelFeatures, ModelInputs
from streamscore.features.stage import FeatureStage
from streamscore.history.dead_letters import DeadLetters
from streamscore.history.indexer import Indexer
from streamscore.ingest.decode import EventDecoder
from streamscore.pipeline.admission import Admission
from streamscore.pipeline.commit import Committer
from streamscore.pipeline.dedupe import EventIdDeduper
from streamscore.pipeline.pipeline import Pipeline
from streamscore.scoring.control import ModelControl, route_for
from streamscore.scoring.cost import CostModel
from streamscore.scoring.model import create_model
from streamscore.scoring.policy import AdaptivePolicy, BatchingPolicy, FixedPolicy
from streamscore.scoring.registry import ModelRegistry
from streamscore.scoring.scorer import Scorer
from streamscore.scoring.stage import ScoringStage
from streamscore.scoring.swap import Swapper, WindowInputs
from streamscore.store.open import open_store, sqlite_path
from streamscore.telemetry.counters import Counters
from streamscore.telemetry.gauges import Gauges
from streamscore.telemetry.metrics import Metrics
from streamscore.windows.event_time import StreamClock
from streamscore.windows.rolling_median import RollingMedians

log = logging.getLogger(__name__)

DEMO_MODEL = "demo_model.pt"
MODELS_DIR = "models"


def demo_model_path(store_url: str) -> Path:
    """Next to a SQLite store; in the user's cache for a server store (it is deterministic)."""
    db = sqlite_path(store_url)
    if db is not None:
        return db.parent / DEMO_MODEL
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "streamscore" / DEMO_MODEL


def models_dir(settings: Settings) -> Path:
    """`--models-dir`, else beside a SQLite store (it travels and is backed up with it), else
    in the user's cache like the demo model (files are content-addressed, so sharing is safe)."""
    if settings.models_dir:
        return Path(settings.models_dir)
    return demo_model_path(settings.store).parent / MODELS_DIR


def batching_policy(settings: Settings) -> BatchingPolicy:
    cost = CostModel(settings.cost_per_batch, settings.cost_per_event, settings.cost_per_second)
    common = {"budget": settings.latency_budget, "max_batch": settings.max_batch, "cost": cost}
    if settings.batching == "adaptive":
        return AdaptivePolicy(**common)
    if settings.batching == "fixed":
        return FixedPolicy(settings.batch_size, settings.batch_max_wait, **common)
    raise ValueError(f"--batching must be adaptive or fixed, not {settings.batching!r}")


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.policy = batching_policy(settings)
        self.store = open_store(settings.store, settings.store_timeout)
        # -- models: registry, experiments (issue 15) --
        model_path = self._model_path()
        self.registry = ModelRegistry(self.store, models_dir(settings), settings.torch_threads)
        cli_version = self.registry.add_cli(model_path)
        self.experiments = ExperimentBook(self.store)
        self.route, self.model_id = route_for(self.registry, self.experiments.running)
        model = self.scorer.model
        # -- end models --
        # A model reads computed features when its file has a sidecar (`--model` only).
        cli_active = self.registry.active == cli_version.version
        inputs = model_inputs.load(model_path) if cli_active else None
        raw = model_inputs.raw_width(inputs, model.n_features)
        self.decoder = EventDecoder(raw, features_required=inputs is None or inputs.raw)
        self.counters = Counters()
        self.metrics = Metrics()
        self.clock = StreamClock(settings.window)
        self.windows = RollingMedians()
        self.window_inputs = WindowInputs(self.clock)  # what a model swap re-scores (issue 15)
        self.deduper = EventIdDeduper(
            max(settings.dedupe_horizon, settings.window), settings.max_dedupe_ids
        )
        self.recovery_seconds = self._recover()
        self.features = self._features(inputs)
        self.drift = DriftWatch(
            input_names(raw, inputs.names if inputs is not None else ()),
            lambda: self.scorer.version,
            settings.drift_window,
            self.store,
            reference_events=settings.drift_reference_events,
            psi_threshold=settings.drift_psi,
            p_threshold=settings.drift_p,
            min_events=settings.drift_min_events,
        )
        self.admission = Admission(
            settings.max_in_flight, settings.max_wait, settings.max_in_flight_bytes
        )
        self.dead_letters = DeadLetters()
        self.indexer = Indexer(
            self.store,
            settings.store,
            settings.store_timeout,
            settings.index_interval,
            settings.retention,
            settings.log_level,
            self.dead_letters,
            settings.dead_letter_limit,
        )
        self.committer = Committer(
            self.store,
            self.clock,
            [self.windows] + ([self.features] if self.features is not None else []),
            [self.drift] if settings.drift else [],
            self.deduper,
            self.counters,
            self.metrics,
            self.model_id,
            settings.max_index_lag,
            settings.index_wait,
            self.indexer.wake,
            settings.max_log_events,
        )
        self.scoring = ScoringStage(
            self.scorer,
            self.policy,
            settings.max_batch,
            self.committer.submit,
            lambda job, exc: self.committer.fail([job], exc),
            self.metrics,
        )
        # -- models: routes, swaps, shadow, experiment counts (issue 15) --
        self.committer.recorders.append(self.window_inputs)
        self.swapper = Swapper(
            self.committer, self.scoring, self.window_inputs, self._replace_windows
        )
        self.swapper.install(self.route, self.model_id)
        self.models = ModelControl(
            self.registry,
            self.experiments,
            self.swapper,
            self.scoring,
            model.n_features,
            lambda: self.counters.events,
        )
        self.committer.observers.append(
            ExperimentObserver(self.experiments, lambda: self.counters.events)
        )
        # -- end models --
        self.pipeline = Pipeline(
            self.admission,
            self.deduper,
            self.scoring,
            self.committer,
            settings.ack_timeout,
            model_inputs=(
                ModelInputs(inputs, self.features)
                if inputs is not None and self.features is not None
                else None
            ),
        )
        self.gauges = Gauges(self)
        self.metrics.watch(self.gauges.prometheus, self.counters, lambda: self.scorer.version)
        self.metrics.watch_models(self._model_counters, self._variant_counters)
        self.metrics.registry.register(self.drift)
        if self.features is not None:
            self.metrics.registry.register(self.features)

    # -- models (issue 15) --
    @property
    def scorer(self) -> Scorer:
        """The active version's scorer."""
        return self.registry.get(self.registry.active or "").scorer

    def _replace_windows(self, windows: RollingMedians) -> None:
        """On the commit thread, during a swap: readers see the old or the new windows."""
        self.committer.statistics = [
            windows if s is self.windows else s for s in self.committer.statistics
        ]
        self.windows = windows

    def _model_counters(self) -> list[tuple[str, int, float]]:
        return [(v.version, v.events, v.seconds) for v in list(self.registry.versions.values())]

    def _variant_counters(self) -> list[tuple[str, str, int, int, int]]:
        with self.experiments.lock:
            return [
                (name, v.name, int(e.users[i]), int(e.events[i]), int(e.conversions[i]))
                for name, e in self.experiments.experiments.items()
                for i, v in enumerate(e.variants)
            ]

    # -- end models --

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
        for logged in self.store.logged_batches():
            n = len(logged.user_ids)
            events = EventBatch(
                logged.user_ids,
                logged.timestamps,
                logged.features,
                logged.event_ids,
                np.arange(n, dtype=np.int64),
            )
            scores = self.route.window_scores(  # never mix models (issue 15)
                logged.user_ids, logged.features, logged.scores, logged.model_ids
            )
            self.windows.update(events, scores, self.clock)
            self.window_inputs.append((events, logged.features.astype(np.float32)))
            self.deduper.load([e for e in logged.event_ids if e is not None], self.clock.time)
        self.experiments.replay(self.store.logged_batches(), self.counters.events)  # issue 15
        return time.perf_counter() - started

    def _features(self, inputs: ModelFeatures | None) -> FeatureStage | None:
        """The feature stage (restored, replayed), or None with `--features off`."""
        if self.settings.features == "off":
            if inputs is not None:
                raise InputsError("the model reads computed features: --features off is refused")
            return None
        if self.settings.features == "default":
            definitions = feature_definitions.default()
        else:
            definitions = feature_definitions.load(self.settings.features)
        stage = FeatureStage(
            definitions,
            self.store,
            self.settings.features_default_version,
            self.settings.features_checkpoint_every,
        )
        if inputs is not None:
            model_inputs.check(inputs, definitions, stage.default_version)
            stage.backfill_now(inputs.version)  # the model cannot score without it
        log.info(
            "features restored",
            extra={
                "versions": list(definitions.versions),
                "replayed_events": stage.replayed,
                "seconds": round(stage.restore_seconds, 3),
            },
        )
        return stage

    def rejected(self, rejections: list[Rejection]) -> None:
        """Keep rejected events as dead letters and count them by reason."""
        self.dead_letters.add(rejections)
        for r in rejections:
            self.metrics.rejected.labels(r.kind).inc()

    def problems(self) -> list[str]:
        """Why the service should not get traffic now (empty when ready)."""
        found = self.pipeline.problems()
        if self.admission.closing:
            found.append(self.admission.closing)
        if not self.committer.store_ok:
            found.append("store: the last write failed")
        if self.admission.in_flight >= self.settings.max_in_flight:
            found.append("overloaded: the pipeline is full")
        if self.committer.index_lag > self.settings.max_index_lag:
            found.append("history index is behind")
        return found

    def start(self) -> None:
        self.pipeline.start()
        self.indexer.start()
        if self.features is not None:
            self.features.start()

    def close(self) -> None:
        """Commit what was submitted, checkpoint the features, index it, close the files."""
        self.pipeline.close()
        self.models.stop_shadow()  # issue 15
        self.experiments.save(self.counters.events)  # issue 15
        if self.features is not None:
            self.features.close()
        self.indexer.close()
        self.drift.close()
        self.store.close()
