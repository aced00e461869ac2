"""Incremental checkpoints: a base, then deltas of the users updated since the last one.

Restoring a base and its deltas gives the same state as the engine they came from, for every
later read and every later update; a restart through a real SQLite store follows the chain
of the current base only (deltas left over from an earlier base are ignored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.events import EventBatch
from streamscore.features.definitions import default
from streamscore.features.engine import FeatureEngine, encode_checkpoint
from streamscore.features.stage import FeatureStage
from streamscore.store.sqlite import SQLiteStore

USERS = [f"u{i}" for i in range(12)]


def rows(n: int, seed: int, users: int = 12, start: float = 1e9) -> list[tuple]:
    rng = np.random.default_rng(seed)
    ts = start + np.cumsum(rng.exponential(900.0, n))
    ts -= rng.exponential(4000.0, n) * (rng.random(n) < 0.3)  # some late
    return [
        (
            f"u{int(rng.integers(users))}", float(t), str(rng.choice(["view", "purchase"])),
            {"amount": float(rng.normal(20, 5)), "device_type": str(rng.choice(["a", "b", "c"]))},
            float(rng.random()),
        )
        for t in ts
    ]  # fmt: skip


def feed(engine: FeatureEngine, part: list[tuple]) -> None:
    if part:
        engine.update(
            [r[0] for r in part], np.array([r[1] for r in part]), [r[2] for r in part],
            [r[3] for r in part], np.array([r[4] for r in part]),
        )  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 10**6),
    st.lists(st.tuples(st.integers(1, 60), st.booleans()), min_size=1, max_size=8),
)
def test_a_base_and_its_deltas_restore_the_engine(seed: int, steps: list[tuple]) -> None:
    """Each step: some events (a few users: the next delta holds only them), then a
    checkpoint, whole or delta. The chain since the last whole one restores the same state,
    which then takes the same further events to the same values."""
    stream = rows(600, seed)
    engine = FeatureEngine(default())
    chain: list[bytes] = []
    at = 0
    for i, (count, whole) in enumerate(steps):
        feed(engine, stream[at : at + count])
        at += count
        if whole or i == 0:
            chain = [encode_checkpoint(engine.snapshot())]
        else:
            chain.append(encode_checkpoint(engine.snapshot(delta=True)))
    restored = FeatureEngine(default())
    restored.restore(chain[0])
    for delta in chain[1:]:
        restored.apply_delta(delta)
    assert restored.lookup(USERS, "v1") == engine.lookup(USERS, "v1")
    assert restored.time == engine.time and restored.events == engine.events
    rest = stream[at:]
    for lo in range(0, len(rest), 97):
        feed(engine, rest[lo : lo + 97])
        feed(restored, rest[lo : lo + 97])
        assert restored.lookup(USERS, "v1") == engine.lookup(USERS, "v1")


def test_a_delta_holds_only_the_users_updated_since_the_last_checkpoint() -> None:
    engine = FeatureEngine(default())
    feed(engine, rows(3000, 1, users=1000))
    whole = encode_checkpoint(engine.snapshot())
    feed(engine, [("u7", 2e9, "view", None, 0.5)])
    delta = encode_checkpoint(engine.snapshot(delta=True))
    assert len(delta) < len(whole) / 20
    nothing = encode_checkpoint(engine.snapshot(delta=True))
    empty = FeatureEngine(default())
    empty.restore(whole)
    empty.apply_delta(delta)
    empty.apply_delta(nothing)
    users = [f"u{i}" for i in range(1000)]
    assert empty.lookup(users, "v1") == engine.lookup(users, "v1")


def _batch(part: list[tuple]) -> EventBatch:
    n = len(part)
    return EventBatch(
        user_ids=[r[0] for r in part], timestamps=np.array([r[1] for r in part]),
        features=np.zeros((n, 3)), event_ids=[None] * n, index=np.arange(n),
        event_types=[r[2] for r in part], attributes=[r[3] for r in part],
    )  # fmt: skip


def _update(stage: FeatureStage, part: list[tuple]) -> None:
    stage.update(_batch(part), np.array([r[4] for r in part]), None)


def test_restarts_follow_the_current_bases_deltas(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    users = [f"u{i}" for i in range(200)]
    stream = rows(4000, 7, users=200)
    stage = FeatureStage(default(), store, checkpoint_every=3600)
    _update(stage, stream[:3000])
    base = stage.checkpoint()
    group = stage.groups[0]
    assert (group.deltas, group.base_bytes) == (0, base)
    later = stream[3000:3400]
    _update(stage, [("u1", *r[1:]) for r in later[:30]] + [("u2", *r[1:]) for r in later[30:60]])
    assert stage.checkpoint() < base / 10
    _update(stage, [("u3", *r[1:]) for r in later[60:90]])
    stage.checkpoint()
    assert group.deltas == 2

    again = FeatureStage(default(), store, checkpoint_every=3600)
    assert again.groups[0].deltas == 2
    want = stage.groups[0].engine.lookup(users, "v1")
    assert again.groups[0].engine.lookup(users, "v1") == want

    # Deltas until they outweigh the base: then a new base, and a delta over it. The old
    # base's deltas 2.. are still stored, and must not be laid over the new base.
    _update(again, stream[3400:])
    again.checkpoint()
    moved = [(u, t + 86_400.0 * k, e, a, s) for k in (1, 2, 3) for u, t, e, a, s in stream[:3000]]
    while again.groups[0].deltas:
        _update(again, moved[:1000])
        moved = moved[1000:]
        again.checkpoint()
    _update(again, [("u5", 2e9, "purchase", {"amount": 1.0}, 0.25)])
    again.checkpoint()
    assert again.groups[0].deltas == 1
    third = FeatureStage(default(), store, checkpoint_every=3600)
    assert third.groups[0].deltas == 1
    assert third.groups[0].engine.lookup(users, "v1") == again.groups[0].engine.lookup(users, "v1")
    store.close()


def test_a_checkpoint_of_the_release_before_deltas_is_restored(tmp_path: Path) -> None:
    """That release stored the seq and the whole checkpoint, with no base id."""
    store = SQLiteStore(tmp_path / "s.db")
    engine = FeatureEngine(default())
    feed(engine, rows(500, 3))
    FeatureStage(default(), store).close()  # records the version's fingerprint
    store.save_state("features.checkpoint.v1", (500).to_bytes(8, "little") + engine.checkpoint())
    stage = FeatureStage(default(), store)
    assert stage.groups[0].live and stage.groups[0].base_id == 0
    assert stage.groups[0].engine.lookup(USERS, "v1") == engine.lookup(USERS, "v1")
    store.close()
