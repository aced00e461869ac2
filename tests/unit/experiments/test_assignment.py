"""Assignment is a pure function of (name, user_id), matches the documented hash, honours weights."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chi2_contingency, chisquare

from streamscore.experiments.assignment import assign, cumulative_weights, positions

USERS = [f"user-{i}" for i in range(60_000)]


def documented_position(name: str, user_id: str) -> float:
    digest = hashlib.sha256(f"{name}\0{user_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53


@given(st.text(min_size=1).filter(lambda s: "\0" not in s), st.lists(st.text(), max_size=20))
def test_positions_follow_the_documented_hash(name: str, user_ids: list[str]) -> None:
    got = positions(name, user_ids)
    assert got.tolist() == [documented_position(name, u) for u in user_ids]
    assert np.all((got >= 0) & (got < 1))


@given(
    st.lists(st.floats(0.01, 100), min_size=1, max_size=6),
    st.lists(st.text(max_size=8), min_size=1, max_size=30),
)
def test_assignment_is_deterministic_and_follows_cumulative_weights(
    weights: list[float], user_ids: list[str]
) -> None:
    got = assign("exp", user_ids, weights)
    assert got.tolist() == assign("exp", list(reversed(user_ids)), weights)[::-1].tolist()
    cumulative = np.cumsum(weights) / np.sum(weights)
    for u, v in zip(user_ids, got, strict=True):
        p = documented_position("exp", u)
        # Brute force: the first variant whose cumulative weight exceeds the position.
        expected = next((i for i, c in enumerate(cumulative) if p < c), len(weights) - 1)
        assert v == expected


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.1, 0.9], [0.2, 0.3, 0.5]])
def test_weights_are_honoured(weights: list[float]) -> None:
    counts = np.bincount(assign("checkout", USERS, weights), minlength=len(weights))
    assert chisquare(counts, np.array(weights) * len(USERS)).pvalue > 1e-3


def test_experiments_are_independent() -> None:
    first = assign("exp-a", USERS, [0.5, 0.5])
    second = assign("exp-b", USERS, [0.5, 0.5])
    table = np.bincount(2 * first + second, minlength=4).reshape(2, 2)
    assert chi2_contingency(table).pvalue > 1e-3
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("weights", [[], [0.5, 0.0], [1.0, -1.0], [float("nan"), 1.0]])
def test_bad_weights_are_refused(weights: list[float]) -> None:
    with pytest.raises(ValueError):
        cumulative_weights(weights)


def test_nul_in_name_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        positions("a\0b", ["c"])
