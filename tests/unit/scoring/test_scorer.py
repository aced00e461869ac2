"""An event's score does not depend on the batch it is scored in: a replay, a retry or a shadow
model scores the same event again in other company, and must find the same float32."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.scoring.model import create_model, load_model
from streamscore.scoring.scorer import Scorer

ROWS = np.random.default_rng(7).normal(size=(2_000, 3)).astype(np.float32)


def scorer(tmp_path_factory) -> Scorer:  # type: ignore[no-untyped-def]
    return Scorer(load_model(create_model(tmp_path_factory.mktemp("m") / "m.pt")))


def test_each_batch_size_gives_the_scores_of_one_big_batch(tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    model = scorer(tmp_path_factory)
    whole = model.score(ROWS)
    for size in (1, 3, 7, 9, 33, 333):
        parts = np.concatenate([model.score(ROWS[i : i + size]) for i in range(0, 2_000, size)])
        assert np.array_equal(parts, whole), (size, int((parts != whole).sum()))


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 1_999), max_size=20, unique=True))
def test_ragged_batches_give_the_same_scores(tmp_path_factory, cuts: list[int]) -> None:  # type: ignore[no-untyped-def]
    model = scorer(tmp_path_factory)
    edges = [0, *sorted(cuts), 2_000]
    parts = np.concatenate([model.score(ROWS[a:b]) for a, b in itertools.pairwise(edges)])
    assert np.array_equal(parts, model.score(ROWS))


def test_padding_is_never_returned(tmp_path: Path) -> None:
    model = Scorer(load_model(create_model(tmp_path / "m.pt")))
    assert model.score(ROWS[:5]).shape == (5,)
    assert model.score(ROWS[:0]).shape == (0,)
