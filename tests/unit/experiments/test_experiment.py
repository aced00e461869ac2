"""`Experiment` against a per-event brute-force oracle of the documented rules, plus persistence."""

from __future__ import annotations

import hashlib
import itertools

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.experiments import Experiment, Variant
from streamscore.experiments.sequential import MixtureSPRT

VARIANTS = [Variant("control", "default@aaaa", 0.4), Variant("treatment", "m2@bbbb", 0.6)]
PURCHASE = {"event_type": "purchase"}


def make(name: str = "exp") -> Experiment:
    return Experiment(name, VARIANTS, PURCHASE)


def oracle_variant(name: str, user: str) -> int:
    digest = hashlib.sha256(f"{name}\0{user}".encode()).digest()
    return int((int.from_bytes(digest[:8], "big") >> 11) / 2**53 >= 0.4)


def feed(exp: Experiment, events: list[tuple[str, float, str | None, float]]) -> None:
    exp.observe(
        [e[0] for e in events],
        np.array([e[1] for e in events], np.float64),
        [e[2] for e in events],
        np.array([e[3] for e in events], np.float32),
    )


events = st.lists(
    st.tuples(
        st.sampled_from([f"u{i}" for i in range(12)]),
        st.integers(0, 20).map(float),
        st.sampled_from(["view", "purchase", None, "purchase-like"]),
        st.floats(0, 1, width=32),
    ),
    max_size=80,
)


@settings(max_examples=150)
@given(events, st.lists(st.integers(0, 80), max_size=6))
def test_counts_and_test_match_a_per_event_oracle(
    stream: list[tuple[str, float, str | None, float]], cuts: list[int]
) -> None:
    exp = make()
    bounds = [0, *sorted(min(c, len(stream)) for c in cuts), len(stream)]
    users, events_, conversions = np.zeros(2, int), np.zeros(2, int), np.zeros(2, int)
    score_sum = np.zeros(2)
    first_ts: dict[str, float] = {}
    converted: set[str] = set()
    expected_test = MixtureSPRT()
    for lo, hi in itertools.pairwise(bounds):
        feed(exp, stream[lo:hi])
        for user, ts, kind, score in stream[lo:hi]:
            v = oracle_variant("exp", user)
            events_[v] += 1
            score_sum[v] += np.float32(score)
            if user not in first_ts:
                first_ts[user] = ts
                users[v] += 1
            elif kind == "purchase" and ts >= first_ts[user] and user not in converted:
                converted.add(user)
                conversions[v] += 1
        if hi > lo:
            expected_test.update(users[0], conversions[0], users[1], conversions[1])
    result = exp.result()
    got = result["variants"]
    assert [v["users"] for v in got] == users.tolist()
    assert [v["events"] for v in got] == events_.tolist()
    assert [v["conversions"] for v in got] == conversions.tolist()
    for i, v in enumerate(got):
        if events_[i]:
            assert v["score_mean"] == pytest.approx(score_sum[i] / events_[i])
        else:
            assert v["score_mean"] is None
    assert result["p_value"] == float(expected_test.p_value)
    assert result["difference_interval"] == [float(expected_test.lower), float(expected_test.upper)]


def test_the_conversion_rule() -> None:
    exp = make()
    # First event a purchase: exposure, not a conversion.
    feed(exp, [("ann", 10.0, "purchase", 0.1)])
    assert sum(v["conversions"] for v in exp.result()["variants"]) == 0
    # A purchase that happened before exposure but arrives late does not count either.
    feed(exp, [("ann", 9.0, "purchase", 0.1), ("ann", 11.0, "view", 0.1)])
    assert sum(v["conversions"] for v in exp.result()["variants"]) == 0
    # A later purchase converts the user, once; repeats do not count again.
    feed(exp, [("ann", 12.0, "purchase", 0.1), ("ann", 13.0, "purchase", 0.1)])
    feed(exp, [("ann", 14.0, "purchase", 0.1)])
    # Within one batch: first event, then a purchase after it.
    feed(exp, [("bob", 5.0, "view", 0.1), ("bob", 5.0, "purchase", 0.1)])
    variants = exp.result()["variants"]
    assert sum(v["conversions"] for v in variants) == 2
    assert sum(v["users"] for v in variants) == 2
    assert sum(v["events"] for v in variants) == 8
    assigned = {exp.variant_of(u).name for u in ("ann", "bob")}
    assert {v["name"] for v in variants if v["conversions"]} == assigned


def test_assignment_is_the_documented_hash() -> None:
    exp = make("checkout")
    users = [f"user-{i}" for i in range(500)]
    assert exp.assign(users).tolist() == [oracle_variant("checkout", u) for u in users]
    assert exp.variant_of("user-7") == VARIANTS[oracle_variant("checkout", "user-7")]


Batch = tuple[list[str], np.ndarray, list[str], np.ndarray]


def stream(
    exp: Experiment, p_control: float, p_treatment: float, users: int, seed: int
) -> list[Batch]:
    """One batch per 100 new users: each sends a first event (30 % of them a purchase), and a
    converting user's purchase arrives 0-3 batches later."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"{seed}-u{i}" for i in range(users)], dtype=object)
    converts = rng.random(users) < np.where(exp.assign(ids.tolist()) == 0, p_control, p_treatment)
    block = np.arange(users) // 100
    later = np.flatnonzero(converts)
    at = np.concatenate([block, block[later] + rng.integers(0, 4, len(later))])
    who = np.concatenate([np.arange(users), later])
    first_kind = np.where(rng.random(users) < 0.3, "purchase", "view")
    kind = np.concatenate([first_kind, np.full(len(later), "purchase")]).astype(object)
    order = np.argsort(at, kind="stable")  # first events before their later purchases
    at, who, kind = at[order], who[order], kind[order]
    edges = np.searchsorted(at, np.arange(at[-1] + 2))
    return [
        (ids[who[a:b]].tolist(), at[a:b].astype(np.float64), kind[a:b].tolist(), np.ones(b - a))
        for a, b in itertools.pairwise(edges)
    ]


def test_a_a_through_the_experiment_with_delayed_conversions() -> None:
    runs, alpha = 200, 0.05
    ever = 0
    for j in range(runs):
        exp = Experiment(f"aa-{j}", [Variant("a", "m@1", 0.5), Variant("b", "m@1", 0.5)], PURCHASE)
        significant = False
        for batch in stream(exp, 0.1, 0.1, 3000, j):  # looked at after every 100 users
            exp.observe(*batch)
            significant |= exp.result()["significant"]
        ever += significant
    print(f"A/A through Experiment: ever significant in {ever} of {runs}")
    assert ever / runs <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)


@pytest.mark.parametrize(("p_treatment", "verb"), [(0.2, "better"), (0.05, "worse")])
def test_a_real_difference_is_reported_in_plain_words(p_treatment: float, verb: str) -> None:
    exp = Experiment("ab", [Variant("control", "m@1", 0.5), Variant("new", "m@2", 0.5)], PURCHASE)
    for batch in stream(exp, 0.1, p_treatment, 20_000, 5):
        exp.observe(*batch)
        if exp.result()["significant"]:
            break
    result = exp.result()
    assert result["significant"] and result["p_value"] <= 0.05
    lo, hi = result["difference_interval"]
    assert (lo > 0) == (verb == "better") and (hi < 0) == (verb == "worse")
    assert result["decision"].startswith(f"new converts {verb} than control (")
    assert f"always-valid p={result['p_value']:.2g})" in result["decision"]
    assert list(result) == [
        "name",
        "status",
        "variants",
        "difference",
        "difference_interval",
        "p_value",
        "significant",
        "decision",
    ]
    assert list(result["variants"][0]) == [
        "name",
        "model",
        "users",
        "events",
        "conversions",
        "conversion_rate",
        "interval",
        "score_mean",
    ]


def test_no_difference_yet_then_stop_freezes() -> None:
    exp = make()
    batches = stream(exp, 0.1, 0.1, 2000, 3)
    for batch in batches[:10]:
        exp.observe(*batch)
    result = exp.result()
    assert not result["significant"]
    assert result["decision"].startswith("no significant difference yet after 1000 users")
    exp.stop()
    frozen = exp.result()
    assert frozen["status"] == "stopped"
    assert frozen["decision"].startswith("stopped: no significant difference after 1000 users")
    for batch in batches[10:]:
        exp.observe(*batch)
    assert exp.result() == frozen
    assert Experiment.from_bytes(exp.to_bytes()).result() == frozen


def test_round_trip_survives_a_restart_and_continues_identically() -> None:
    original, uninterrupted = make(), make()
    batches = stream(original, 0.1, 0.15, 3000, 9)
    for batch in batches[:12]:
        original.observe(*batch)
    restored = Experiment.from_bytes(original.to_bytes())
    assert restored.result() == original.result()
    for batch in batches[12:]:
        restored.observe(*batch)
    for batch in batches:
        uninterrupted.observe(*batch)
    assert restored.result() == uninterrupted.result()
    assert restored.to_bytes() == uninterrupted.to_bytes()


def test_validation() -> None:
    with pytest.raises(ValueError, match="two variants"):
        Experiment("x", VARIANTS[:1], PURCHASE)
    with pytest.raises(ValueError, match="two variants"):
        Experiment("x", [VARIANTS[0], VARIANTS[0]], PURCHASE)
    with pytest.raises(ValueError, match="outcome"):
        Experiment("x", VARIANTS, {"kind": "purchase"})
    with pytest.raises(ValueError, match="weights"):
        Experiment("x", [Variant("a", "m", 0.0), Variant("b", "m", 1.0)], PURCHASE)
    with pytest.raises(msgspec.DecodeError):
        Experiment.from_bytes(b"not an experiment")
