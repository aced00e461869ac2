"""`FeatureEngine.preview` (the model's input rows) against the brute-force oracle: each event's
row holds the user's earlier events and the event itself, read at the batch's stream time, and
the engine is left as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamscore.features.definitions import default
from streamscore.features.engine import FeatureEngine
from tests.unit.features.feature_oracle import Event, expected

DAY = 86_400.0
TYPES = [None, "view", "purchase"]


def _random_batch(rng: np.random.Generator, cursor: float, size: int) -> list[tuple]:
    rows = []
    for _ in range(size):
        user = str(rng.choice(["a", "a", "b", "c"]))
        ts = cursor - float(rng.choice([0.0, 300.0, 1800.0, 4 * 3600.0, 2 * DAY])) * rng.random()
        etype = TYPES[int(rng.integers(0, 3))]
        attrs = None
        if rng.random() < 0.6:
            attrs = {"amount": round(float(rng.uniform(0, 50)), 2)}
            if rng.random() < 0.7:
                attrs["device_type"] = str(rng.choice(["web", "ios", "android"]))
        rows.append((user, round(ts, 1), etype, attrs, round(float(rng.uniform(-1, 1)), 3)))
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_preview_matches_the_oracle_and_changes_nothing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    fs = default()["v1"]
    engine = FeatureEngine(default())
    names = [n for n in engine.names("v1") if n != "last_event_type" and not n.startswith("score")]
    log: list[Event] = []
    cursor, time = 1e9, -math.inf
    for _ in range(12):
        cursor += float(rng.choice([0.0, 60.0, 1800.0, 6 * 3600.0, DAY]))
        batch = _random_batch(rng, cursor, int(rng.integers(1, 25)))
        users = [r[0] for r in batch]
        ts = np.array([r[1] for r in batch])
        before = engine.lookup(["a", "b", "c"], "v1"), engine.time
        rows = engine.preview(users, ts, [r[2] for r in batch], [r[3] for r in batch], "v1", names)
        assert (engine.lookup(["a", "b", "c"], "v1"), engine.time) == before
        reached = max(time, float(ts.max()))
        for i, user in enumerate(users):
            prefix = [
                Event(u, tt, ty, at, 0.0, len(log) + j, reached)
                for j, (u, tt, ty, at, _) in enumerate(batch[: i + 1])
                if u == user
            ]
            want = expected(fs, user, log + prefix, reached)
            for j, name in enumerate(names):
                value = want[name][0] if isinstance(want[name], tuple) else want[name]
                value = np.nan if value is None else float(value)
                assert np.isclose(rows[i, j], value, rtol=1e-6, equal_nan=True), (name, i)
        for user, t, etype, attrs, score in batch:
            time = max(time, t)
            log.append(Event(user, t, etype, attrs, float(np.float32(score)), len(log), time))
        engine.update(
            users, ts, [r[2] for r in batch], [r[3] for r in batch],
            np.array([r[4] for r in batch], dtype=np.float32),
        )  # fmt: skip


def test_preview_refuses_categorical_inputs() -> None:
    engine = FeatureEngine(default())
    with pytest.raises(ValueError, match="categorical"):
        engine.preview(["a"], np.array([1e9]), ["view"], [None], "v1", ["last_event_type"])
