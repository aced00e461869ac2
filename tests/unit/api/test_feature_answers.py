"""The features API's JSON, built from bytes templates, against the engine's own dicts: the same
document for any users (unknown ones, ids with quotes, commas and `%`), any names (none
included), before and after the first event."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from streamscore.features.answers import encode_users
from streamscore.features.definitions import default
from streamscore.features.engine import FeatureEngine
from tests.unit.features.test_feature_preview import _random_batch

USERS = ["a", "b", "c", "nobody", 'q"uote', "com,ma", "per%cent", "ünï"]


def _expected(engine: FeatureEngine, users: list[str], names: list[str] | None) -> list[dict]:
    found = engine.lookup(users, "v1", names)
    stream_time = engine.time if math.isfinite(engine.time) else None
    return [
        {"user_id": u, "version": "v1", "stream_time": stream_time, "features": found[u]}
        for u in users
    ]


@pytest.mark.parametrize("seed", range(8))
def test_answers_equal_the_engines_lookup(seed: int) -> None:
    rng = np.random.default_rng(seed)
    engine = FeatureEngine(default())
    declared = list(engine.names("v1"))
    cursor = 1e9
    for step in range(6):
        users = [str(u) for u in rng.choice(USERS, int(rng.integers(0, len(USERS) + 1)))]
        pick = rng.random(len(declared)) < 0.5
        names = None if step % 3 == 0 else [n for n, p in zip(declared, pick, strict=True) if p]
        got = [msgspec.json.decode(part) for part in encode_users(
            users, "v1", engine.table(users, "v1", names)
        )]  # fmt: skip
        assert got == _expected(engine, users, names)
        cursor += float(rng.choice([0.0, 60.0, 3600.0, 86_400.0]))
        batch = _random_batch(rng, cursor, int(rng.integers(1, 30)))
        engine.update(
            [r[0] for r in batch], np.array([r[1] for r in batch]), [r[2] for r in batch],
            [r[3] for r in batch], np.array([r[4] for r in batch]),
        )  # fmt: skip
