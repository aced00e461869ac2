"""`Route`: rows go to their variant's model, and windows re-score only other models' rows."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.experiments.experiment import Experiment, Variant
from streamscore.scoring.model import LoadedModel
from streamscore.scoring.routing import Route
from streamscore.scoring.scorer import Scorer


class Scale(torch.nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k
        self.calls: list[list[float]] = []  # the distinct rows of each call (without padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(sorted(set(x[:, 0].tolist())))
        return x.sum(1) * self.k


def scorer(k: float) -> Scorer:
    return Scorer(LoadedModel(Scale(k), 1, f"m{k:g}@00"))


EXPERIMENT = Experiment(
    "exp", [Variant("control", "m1@00", 0.3), Variant("treatment", "m10@00", 0.7)],
    {"event_type": "buy"},
)  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=60))
def test_each_row_is_scored_by_its_variant_model(users: list[int]) -> None:
    one, ten = scorer(1.0), scorer(10.0)
    route = Route([one, ten], [1, 2], EXPERIMENT, [0, 1])
    ids = [f"user{u}" for u in users]
    x = np.arange(1, len(ids) + 1, dtype=np.float32)[:, None]
    scored = route.score(x, ids)
    variant = EXPERIMENT.assign(ids)
    assert scored.scores.tolist() == (x[:, 0] * np.where(variant == 1, 10, 1)).tolist()
    assert scored.model_ids.tolist() == np.where(variant == 1, 2, 1).tolist()
    assert scored.variants == [["control", "treatment"][v] for v in variant]
    # one forward call per model used, not per row
    used = {int(v) for v in variant}
    assert sorted(k for k, _, _ in scored.timings) == sorted(used)


def test_window_scores_re_score_only_rows_of_another_model() -> None:
    old, new = scorer(1.0), scorer(10.0)
    x = np.array([[1.0], [2.0], [3.0]], np.float32)
    served = np.array([1.0, 20.0, 3.0], np.float32)
    model_ids = np.array([1, 2, 1], np.int32)  # the middle row was already scored by `new`
    new.model.module.calls.clear()  # type: ignore[union-attr]
    fixed = Route([new], [2]).window_scores(["a", "b", "c"], x, served, model_ids)
    assert fixed.tolist() == [10.0, 20.0, 30.0]
    assert new.model.module.calls == [[1.0, 3.0]]  # type: ignore[union-attr]
    assert Route([old], [1]).window_scores(["a"], x[:1], served[:1], None).tolist() == [1.0]
    del old
