"""Jobs admitted to the scoring stage and not yet fully scored, queued by priority.

A forward call is cut across jobs: it takes events from the oldest `high` jobs first, then
`normal`, then `low`, and may end in the middle of a job, whose remaining events go into the
next call. A job moves on to the commit step once all its events are scored.

>>> import numpy as np
>>> from streamscore.events import EventBatch, HIGH, NORMAL
>>> def job(n, arrived, priority):
...     events = EventBatch(["u"] * n, np.zeros(n), np.zeros((n, 1)), [None] * n,
...                         np.arange(n), priority)
...     return Job(events, duplicates=0, arrived=arrived)
>>> a, b = job(3, 0.0, NORMAL), job(2, 1.0, HIGH)
>>> queue = JobQueue()
>>> queue.add(a); queue.add(b)
>>> [(j is b, start, stop) for j, start, stop in queue.take(4)]
[(True, 0, 2), (False, 0, 2)]
>>> queue.events, queue.oldest(), queue.has_high
(1, 0.0, False)
"""

from __future__ import annotations

from collections import deque

from streamscore.events import HIGH
from streamscore.pipeline.job import Job


class JobQueue:
    def __init__(self) -> None:
        self._queues: tuple[deque[Job], ...] = (deque(), deque(), deque())
        self.events = 0  # queued events not yet taken into a forward call

    def add(self, job: Job) -> None:
        self._queues[job.priority].append(job)
        self.events += job.size

    @property
    def has_high(self) -> bool:
        return bool(self._queues[HIGH])

    def oldest(self) -> float | None:
        """Arrival time of the longest-waiting queued job."""
        heads = [q[0].arrived for q in self._queues if q]
        return min(heads) if heads else None

    def take(self, size: int) -> list[tuple[Job, int, int]]:
        """Up to `size` events as (job, start, stop) slices, highest priority first."""
        slices = []
        room = size
        for q in reversed(self._queues):
            while q and room:
                job = q[0]
                start = job.taken
                stop = min(job.size, start + room)
                slices.append((job, start, stop))
                job.taken = stop
                room -= stop - start
                if stop == job.size:
                    q.popleft()
        self.events -= size - room
        return slices

    def drain(self) -> list[Job]:
        """Every queued job (partly taken ones too), leaving the queue empty."""
        jobs = [job for q in self._queues for job in q]
        for q in self._queues:
            q.clear()
        self.events = 0
        return jobs

    def discard(self, job: Job) -> None:
        """Forget a job whose scoring failed, with whatever of it was still queued."""
        queue = self._queues[job.priority]
        if job in queue:
            queue.remove(job)
            self.events -= job.size - job.taken
            job.taken = job.size
