"""The cluster's PostgreSQL history: commits are fenced by the owner's epoch and progress."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from streamscore.cluster.history import ClusterHistory, Fenced, event_seq
from streamscore.history.chunks import split

from ...conftest import create_database, drop_database


@pytest.fixture
def history(cluster_name: str) -> Iterator[ClusterHistory]:
    url = create_database()
    store = ClusterHistory(url, cluster_name)
    yield store
    store.close()
    drop_database(url)


def chunks(user: str, sequence: int, timestamps: list[float]) -> list:
    n = len(timestamps)
    seqs = np.array([event_seq(sequence, i) for i in range(n)])
    return split(
        [user] * n, [None] * n, np.array(timestamps), np.full(n, 0.5, "f4"),
        np.zeros((n, 1)), seqs, np.zeros(n, dtype=np.int64),
    )  # fmt: skip


def test_only_the_current_owner_moves_the_progress(history: ClusterHistory) -> None:
    assert history.claim(3, epoch=5).last_msg == 0
    history.commit(3, 5, 0, 7, chunks("a", 7, [1.0, 2.0]), 2)
    assert history.claim(3, epoch=9).last_msg == 7  # a new owner
    with pytest.raises(Fenced):  # the deposed owner, which has not noticed yet
        history.commit(3, 5, 7, 8, chunks("a", 8, [3.0]), 1)
    with pytest.raises(Fenced):  # the new owner, but not after what is stored
        history.commit(3, 9, 0, 8, chunks("a", 8, [3.0]), 1)
    history.commit(3, 9, 7, 8, chunks("a", 8, [3.0]), 1)
    with pytest.raises(Fenced):  # an older epoch cannot claim back
        history.claim(3, epoch=6)
    rows = history.history("a", -np.inf, np.inf, (-np.inf, -1), 10)
    assert [r[0] for r in rows] == [1.0, 2.0, 3.0]  # the fenced batch was not stored
    assert history.totals()[3].events == 3


def test_checkpoints_are_fenced_too(history: ClusterHistory) -> None:
    history.claim(1, epoch=2)
    history.save_checkpoint(1, 2, 10, b"state at 10")
    history.claim(1, epoch=4)
    with pytest.raises(Fenced):
        history.save_checkpoint(1, 2, 12, b"stale")
    assert history.load_checkpoint(1) == b"state at 10"
    assert history.load_checkpoint(0) is None
