"""Requests admitted to the scoring stage and not yet fully scored, queued by priority.

A batch is cut across requests: it takes events from the oldest `high` requests first, then
`normal`, then `low`, and may end in the middle of a request, whose remaining events go into
the next batch. A request moves on to the writer once all its events are scored.

>>> import numpy as np
>>> queue = PendingQueue()
>>> a = Pending(job="a", features=np.zeros((3, 1), "f4"), arrived=0.0, priority=NORMAL)
>>> b = Pending(job="b", features=np.zeros((2, 1), "f4"), arrived=1.0, priority=HIGH)
>>> queue.add(a); queue.add(b)
>>> [(p.job, start, stop) for p, start, stop in queue.take(4)]
[('b', 0, 2), ('a', 0, 2)]
>>> queue.events, queue.oldest(), queue.has_high
(1, 0.0, False)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

LOW, NORMAL, HIGH = 0, 1, 2
PRIORITIES = {"low": LOW, "normal": NORMAL, "high": HIGH}


@dataclass(slots=True, eq=False)
class Pending:
    job: object  # what the pipeline resolves when the request is done
    features: np.ndarray  # float32 [n, F]: the request's events that are not duplicates
    arrived: float  # monotonic time the request was submitted
    priority: int
    taken: int = 0  # events handed to batches so far
    done: int = 0  # events scored so far
    scores: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.scores = np.empty(len(self.features), dtype=np.float32)

    @property
    def size(self) -> int:
        return len(self.features)


class PendingQueue:
    def __init__(self) -> None:
        self._queues: tuple[deque[Pending], ...] = (deque(), deque(), deque())
        self.events = 0  # queued events not yet taken into a batch

    def add(self, pending: Pending) -> None:
        self._queues[pending.priority].append(pending)
        self.events += pending.size

    @property
    def has_high(self) -> bool:
        return bool(self._queues[HIGH])

    def oldest(self) -> float | None:
        """Arrival time of the longest-waiting queued request."""
        heads = [q[0].arrived for q in self._queues if q]
        return min(heads) if heads else None

    def take(self, size: int) -> list[tuple[Pending, int, int]]:
        """Up to `size` events as (request, start, stop) slices, highest priority first."""
        slices = []
        room = size
        for q in reversed(self._queues):
            while q and room:
                pending = q[0]
                start = pending.taken
                stop = min(pending.size, start + room)
                slices.append((pending, start, stop))
                pending.taken = stop
                room -= stop - start
                if stop == pending.size:
                    q.popleft()
        self.events -= size - room
        return slices

    def discard(self, pending: Pending) -> None:
        """Forget a request whose scoring failed, with whatever of it was still queued."""
        queue = self._queues[pending.priority]
        if pending in queue:
            queue.remove(pending)
            self.events -= pending.size - pending.taken
            pending.taken = pending.size
