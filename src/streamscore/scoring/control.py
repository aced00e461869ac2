"""Model operations behind the HTTP layer: activate a version (rollback = activate the previous
one), run an A/B experiment, shadow-score a version. Each change of who scores what goes
through `Swapper`, so windows are rebuilt under the new route and switch atomically."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streamscore.experiments.book import ExperimentBook
from streamscore.experiments.experiment import Experiment, Variant
from streamscore.scoring.registry import ModelRegistry, UnknownVersion, Version
from streamscore.scoring.routing import Route
from streamscore.scoring.shadow import Shadow
from streamscore.scoring.stage import ScoringStage
from streamscore.scoring.swap import Swapper


class Incompatible(ValueError):
    """The version reads another number of features than the service decodes (400)."""


def route_for(registry: ModelRegistry, experiment: Experiment | None) -> tuple[Route, int]:
    """The route for the active version and a running experiment, and the active model id."""
    active = registry.get(registry.active or "")
    scorers = [active.scorer]
    ids = [active.model_id]
    variant_scorers: list[int] = []
    if experiment is not None:
        for variant in experiment.variants:
            version = registry.get(variant.model)
            if version.scorer not in scorers:
                scorers.append(version.scorer)
                ids.append(version.model_id)
            variant_scorers.append(scorers.index(version.scorer))
    return Route(scorers, ids, experiment, variant_scorers), active.model_id


class ModelControl:
    def __init__(
        self,
        registry: ModelRegistry,
        book: ExperimentBook,
        swapper: Swapper,
        stage: ScoringStage,
        n_features: int,
        events_total: Callable[[], int],
    ) -> None:
        self.registry = registry
        self.book = book
        self.swapper = swapper
        self.stage = stage
        self.n_features = n_features
        self.events_total = events_total
        self.shadow: Shadow | None = None
        self._lock = threading.Lock()  # one change at a time
        stage.on_timings = self._record

    def route(self) -> tuple[Route, int]:
        return route_for(self.registry, self.book.running)

    def _record(self, route: Route, timings: list[tuple[int, int, float]]) -> None:
        for k, events, seconds in timings:
            version = self.registry.versions.get(route.scorers[k].version)
            if version is not None:
                version.record(events, seconds)

    def _compatible(self, version: str) -> Version:
        found = self.registry.get(version)
        if found.scorer.n_features != self.n_features:
            raise Incompatible(
                f"{version} reads {found.scorer.n_features} features; this service decodes "
                f"{self.n_features}"
            )
        return found

    def activate(self, version: str) -> dict[str, Any]:
        """Raises UnknownVersion or Incompatible; returns the swap's figures."""
        with self._lock:
            self._compatible(version)
            previous = self.registry.active
            self.registry.activate(version)
            try:
                return self.swapper.switch(*self.route())
            except BaseException:
                if previous is not None:
                    self.registry.activate(previous)
                raise

    def start_experiment(
        self,
        name: str,
        variants: Sequence[Variant],
        outcome: Mapping[str, str],
        alpha: float = 0.05,
    ) -> Experiment:
        """Raises UnknownVersion, Incompatible, ValueError or ExperimentConflict."""
        with self._lock:
            for variant in variants:
                self._compatible(variant.model)
            experiment = self.book.start(name, variants, outcome, self.events_total(), alpha)
            self.swapper.switch(*self.route())
            return experiment

    def stop_experiment(self, name: str) -> bool:
        with self._lock:
            if not self.book.stop(name, self.events_total()):
                return False
            self.swapper.switch(*self.route())
            return True

    def start_shadow(self, version: str) -> None:
        with self._lock:
            scorer = self._compatible(version).scorer
            self.stop_shadow()
            self.shadow = Shadow(scorer)
            self.stage.tap = self.shadow.offer

    def stop_shadow(self) -> bool:
        shadow = self.shadow
        if shadow is None:
            return False
        self.stage.tap = None
        self.shadow = None
        shadow.close()
        return True


__all__ = ["Incompatible", "ModelControl", "UnknownVersion"]
