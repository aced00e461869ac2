"""The scoring stage's thread: queue jobs by priority, and run a forward call whenever the
batching policy says one is due (enough events queued, the oldest has waited long enough, or a
`high` job is queued).

The stage knows nothing of HTTP or storage: the pipeline hands it jobs and gets them back
scored (`on_scored`) or failed (`on_failed`), and the benchmark drives the very same loop with
synthetic jobs. If the loop itself breaks (a bug, not a model error), every job it holds is
failed, the failure is counted and logged, and the loop starts again: nobody waits forever.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from streamscore.events import HIGH
from streamscore.pipeline.job import Job
from streamscore.scoring.policy import BatchingPolicy, Decision
from streamscore.scoring.queue import JobQueue
from streamscore.scoring.routing import Route
from streamscore.scoring.scorer import Scorer, ScoringFailed
from streamscore.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

_STOP = object()


Tap = Callable[[np.ndarray, np.ndarray, float], None]  # (inputs, scores, seconds) per call
Timings = Callable[[Route, list[tuple[int, int, float]]], None]


class ScoringStage:
    def __init__(
        self,
        scorer: Scorer,
        policy: BatchingPolicy,
        max_batch: int,
        on_scored: Callable[[list[Job]], None],
        on_failed: Callable[[Job, BaseException], None],
        metrics: Metrics | None = None,
    ) -> None:
        """Scores with `scorer` alone until `route` is replaced (a swap, an experiment)."""
        self.scorer = scorer
        self.route = Route([scorer], [-1])  # -1: the commit step's batch model
        self.tap: Tap | None = None  # shadow scoring: must not block (it queues or drops)
        self.on_timings: Timings | None = None  # per-model counters
        self.policy = policy
        self.max_batch = max_batch
        self.on_scored = on_scored
        self.on_failed = on_failed
        self.metrics = metrics
        self.crashes = 0  # times the loop broke and was restarted
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        self._inbox.put(job)

    def close(self, drain: bool = True) -> None:
        """Score everything submitted, then stop; with `drain=False` (the benchmark, after an
        overloaded run), stop after the current forward call and leave the rest unscored."""
        if not drain:
            self._abandon.set()
        self._inbox.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        jobs = JobQueue()
        while True:
            try:
                self._loop(jobs)
                return
            except Exception as exc:  # a bug in the loop: fail what it holds, start again
                self.crashes += 1
                log.exception("scoring stage broke; failing its queued jobs and restarting")
                for job in jobs.drain():
                    self.on_failed(job, exc)
                jobs = JobQueue()

    def _loop(self, jobs: JobQueue) -> None:
        stopping = False
        while not self._abandon.is_set():
            now = time.monotonic()
            decision = self.policy.decide(now)
            oldest = jobs.oldest()
            if oldest is not None and (
                stopping
                or jobs.has_high  # high priority is never held back to fill a batch
                or jobs.events >= decision.size
                or now - oldest >= decision.max_wait
            ):
                self._forward(jobs, decision)
                continue
            if stopping:
                return
            timeout = None if oldest is None else max(0.0, oldest + decision.max_wait - now)
            try:
                items = [self._inbox.get(timeout=timeout)]
            except queue.Empty:
                continue
            while True:  # take everything already queued before deciding again
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is _STOP:
                    stopping = True
                else:
                    assert isinstance(item, Job)
                    self.policy.arrived(item.size, item.arrived)
                    jobs.add(item)

    def _forward(self, jobs: JobQueue, decision: Decision) -> None:
        """One forward call over slices of the queued jobs; any failure fails those jobs."""
        slices = jobs.take(min(max(decision.size, decision.take), self.max_batch))
        try:
            self._score(slices, decision)
        except Exception as exc:  # ScoringFailed (the model), or a bug: fail these jobs, go on
            if self.metrics is not None:
                self.metrics.scoring_failures.inc()
            if isinstance(exc, ScoringFailed):
                log.error("scoring failed: %s", exc)
            else:
                self.crashes += 1
                log.exception("scoring stage failed a forward call")
            for job in {id(job): job for job, _, _ in slices}.values():
                jobs.discard(job)
                self.on_failed(job, exc)

    def _score(self, slices: list[tuple[Job, int, int]], decision: Decision) -> None:
        features = np.concatenate([job.features[a:b] for job, a, b in slices])
        user_ids = [u for job, a, b in slices for u in job.events.user_ids[a:b]]
        route = self.route  # read once: a swap never splits a call
        started = time.monotonic()
        scored = route.score(features, user_ids)
        seconds = time.monotonic() - started
        scores = scored.scores
        self.policy.observe(
            decision,
            np.array([started - job.arrived for job, _, _ in slices]),
            np.array([b - a for _, a, b in slices]),
            seconds,
            high_priority=any(job.priority == HIGH for job, _, _ in slices),
        )
        if self.metrics is not None:
            self.metrics.inference_seconds.observe(seconds)
            self.metrics.batch_size.observe(len(features))
        if self.on_timings is not None:
            self.on_timings(route, scored.timings)
        if self.tap is not None:
            self.tap(features, scores, seconds)
        done = []
        offset = 0
        for job, a, b in slices:
            job.scores[a:b] = scores[offset : offset + b - a]
            job.model_ids[a:b] = scored.model_ids[offset : offset + b - a]
            if scored.variants is not None:
                if job.variants is None:
                    job.variants = [None] * job.size
                job.variants[a:b] = scored.variants[offset : offset + b - a]
            offset += b - a
            job.done += b - a
            if job.done == job.size:
                done.append(job)
        if done:
            self.on_scored(done)
