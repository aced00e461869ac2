"""The scoring stage's job queue: forward calls cut across jobs, by priority then arrival."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamscore.events import HIGH, LOW, NORMAL, EventBatch
from streamscore.pipeline.job import Job
from streamscore.scoring.queue import JobQueue


@given(
    st.lists(
        st.tuples(st.integers(1, 50), st.sampled_from([LOW, NORMAL, HIGH])), min_size=1, max_size=30
    ),
    st.integers(1, 64),
)
def test_slices_cover_every_job_once_highest_priority_first(requests, size) -> None:  # type: ignore[no-untyped-def]
    queue = JobQueue()
    items = [
        Job(
            EventBatch(["u"] * n, np.zeros(n), np.zeros((n, 1)), [None] * n, np.arange(n), p),
            duplicates=0,
            arrived=float(i),
        )
        for i, (n, p) in enumerate(requests)
    ]
    number = {id(job): i for i, job in enumerate(items)}
    for item in items:
        queue.add(item)
    covered: dict[int, list[tuple[int, int]]] = {}
    order = []
    while queue.events:
        slices = queue.take(size)
        assert 0 < sum(b - a for _, a, b in slices) <= size
        for job, a, b in slices:
            covered.setdefault(number[id(job)], []).append((a, b))
            order.append((-job.priority, number[id(job)]))
    for i, item in enumerate(items):
        spans = covered[i]
        assert spans[0][0] == 0 and spans[-1][1] == item.size
        assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    firsts = list(dict.fromkeys(order))
    assert firsts == sorted(firsts)  # by priority, then arrival
