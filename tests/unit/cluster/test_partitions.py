import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from streamscore.cluster.leases import assign
from streamscore.cluster.partitions import check_cluster_name, hash_ids, partition_of

MASK = (1 << 64) - 1


def reference_hash(user_id: str) -> int:
    """The documented hash, one byte at a time in Python integers."""
    h = 0xCBF29CE484222325
    for byte in user_id.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    return h ^ (h >> 33)


@given(st.lists(st.text(max_size=40), max_size=50), st.integers(1, 1000))
def test_partition_of_matches_the_documented_hash(user_ids: list[str], partitions: int) -> None:
    expected = [reference_hash(u) % partitions for u in user_ids]
    assert partition_of(user_ids, partitions).tolist() == expected
    assert hash_ids(user_ids).tolist() == [reference_hash(u) for u in user_ids]


def test_same_id_same_partition_whatever_the_batch() -> None:
    ids = [f"user-{i}" for i in range(300)]
    whole = partition_of(ids, 64)
    assert partition_of(ids[::-1], 64).tolist() == whole[::-1].tolist()
    assert [int(partition_of([u], 64)[0]) for u in ids[:50]] == whole[:50].tolist()


@pytest.mark.parametrize("prefix", ["user-", "", "ユーザー"])
def test_partitions_are_balanced(prefix: str) -> None:
    counts = np.bincount(partition_of([f"{prefix}{i}" for i in range(64_000)], 64), minlength=64)
    # Counts from a uniform hash pass a chi-square test of uniformity.
    assert stats.chisquare(counts).pvalue > 1e-4


@given(
    st.sets(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=6),
    st.text("xyz", min_size=1, max_size=3),
)
def test_assignment_moves_only_what_a_joining_node_takes(nodes: set[str], newcomer: str) -> None:
    before = assign(32, sorted(nodes))
    after = assign(32, sorted(nodes | {newcomer}))
    assert set(before) <= nodes
    assert all(b == a or a == newcomer for b, a in zip(before, after, strict=True))
    assert assign(32, list(reversed(sorted(nodes)))) == before


def test_assignment_is_balanced() -> None:
    owners = assign(4096, ["node-a", "node-b", "node-c"])
    counts = [owners.count(n) for n in ("node-a", "node-b", "node-c")]
    assert stats.chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a*", "x" * 65])
def test_bad_cluster_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_cluster_name(name)
