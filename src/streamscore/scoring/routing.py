"""Which model scores which event: the active version for everyone or, while an A/B experiment
runs, each user's variant model (`Experiment.assign`, a hash of the user id, so sticky).

A `Route` is immutable. The scoring stage reads the current one once per forward call and
splits the call by model, so a swap never splits a call's bookkeeping: each row gets the score,
the store's model id and the variant of the model that produced it. The commit step asks the
route its windows were built under for `window_scores`, which re-scores only rows produced by
another model (in flight across a swap), so a median is always over one model's scores.

>>> import torch
>>> from streamscore.scoring.model import LoadedModel
>>> class Times(torch.nn.Module):
...     def __init__(self, k: float) -> None:
...         super().__init__()
...         self.k = k
...     def forward(self, x: torch.Tensor) -> torch.Tensor:
...         return x.sum(1) * self.k
>>> one, ten = (Scorer(LoadedModel(Times(k), 1, f"m@{k}")) for k in (1.0, 10.0))
>>> route = Route([one], [7])
>>> scored = route.score(np.array([[1.0], [2.0]], "f4"), ["a", "b"])
>>> scored.scores.tolist(), scored.model_ids.tolist(), scored.variants
([1.0, 2.0], [7, 7], None)
>>> Route([ten], [8]).window_scores(["a", "b"], np.array([[1.0], [2.0]], "f4"),
...                                 scored.scores, scored.model_ids).tolist()
[10.0, 20.0]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamscore.experiments.experiment import Experiment
from streamscore.scoring.scorer import Scorer


@dataclass(frozen=True, slots=True)
class Scored:
    scores: np.ndarray  # float32 [n]
    model_ids: np.ndarray  # int32 [n], the store's id of the model that scored each row
    variants: list[str | None] | None  # each row's experiment variant, None without one
    timings: list[tuple[int, int, float]]  # (scorer index, rows, seconds) per model called


class Route:
    def __init__(
        self,
        scorers: Sequence[Scorer],
        model_ids: Sequence[int],
        experiment: Experiment | None = None,
        variant_scorers: Sequence[int] = (),
    ) -> None:
        """`scorers[0]` is the active model; with an `experiment`, variant `i` is scored by
        `scorers[variant_scorers[i]]`."""
        self.scorers = list(scorers)
        self.model_ids = np.asarray(model_ids, dtype=np.int32)
        self.experiment = experiment
        self.variant_scorers = np.asarray(variant_scorers, dtype=np.int64)
        self.variant_names = [] if experiment is None else [v.name for v in experiment.variants]

    @property
    def n_features(self) -> int:
        return self.scorers[0].n_features

    def assign(self, user_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(scorer index, variant index or None) per row."""
        if self.experiment is None:
            return np.zeros(len(user_ids), dtype=np.int64), None
        variants = self.experiment.assign(user_ids)
        return self.variant_scorers[variants], variants

    def score(self, features: np.ndarray, user_ids: Sequence[str]) -> Scored:
        """One forward call per model the rows need; raises `ScoringFailed` like `Scorer`."""
        which, variants = self.assign(user_ids)
        timings = []
        if not which.any():
            started = time.perf_counter()
            scores = self.scorers[0].score(features)
            timings.append((0, len(features), time.perf_counter() - started))
        else:
            scores = np.empty(len(features), dtype=np.float32)
            for k in np.unique(which).tolist():
                rows = np.flatnonzero(which == k)
                started = time.perf_counter()
                scores[rows] = self.scorers[k].score(features[rows])
                timings.append((k, len(rows), time.perf_counter() - started))
        names = self.variant_names
        return Scored(
            scores,
            self.model_ids[which],
            None if variants is None else [names[v] for v in variants.tolist()],
            timings,
        )

    def window_scores(
        self,
        user_ids: Sequence[str],
        features: np.ndarray,
        scores: np.ndarray,
        model_ids: np.ndarray | None,
    ) -> np.ndarray:
        """`scores`, with rows that another model produced re-scored by this route's model
        (`model_ids` None: rows of an old log that did not record it, taken as they are)."""
        if model_ids is None or len(scores) == 0:
            return scores
        which, _ = self.assign(user_ids)
        stale = model_ids != self.model_ids[which]
        if not stale.any():
            return scores
        fixed = np.array(scores, dtype=np.float32)
        rows = np.flatnonzero(stale)
        fixed[rows] = self.score(
            np.ascontiguousarray(features[rows], dtype=np.float32), [user_ids[i] for i in rows]
        ).scores
        return fixed
