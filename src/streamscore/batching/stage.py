"""The scoring stage's thread: queue requests by priority, and run a forward call whenever the
batching policy says one is due (enough events queued, the oldest has waited long enough, or a
`high` request is queued).

The stage knows nothing of HTTP or storage: the pipeline hands it requests and gets them back
scored (or failed), and the benchmark drives the very same loop with synthetic load.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from streamscore.batching.controller import Batching, Policy
from streamscore.batching.pending import HIGH, Pending, PendingQueue
from streamscore.score.scorer import Scorer, ScoringFailed
from streamscore.stats.metrics import Metrics

log = logging.getLogger(__name__)

_STOP = object()

Prepare = Callable[[object], tuple[np.ndarray, int] | None]
Finished = Callable[[list[tuple[object, np.ndarray]]], None]
Failed = Callable[[object, BaseException], None]


class ScoringStage:
    """`submit(request, arrived)`; `prepare(request)` (in this thread) returns its float32
    features and priority, or None if there is nothing to score; `finished` gets requests with
    all their scores, once per forward call that completes any; `failed` gets the others."""

    def __init__(
        self,
        scorer: Scorer,
        batching: Batching,
        max_batch: int,
        prepare: Prepare,
        finished: Finished,
        failed: Failed,
        metrics: Metrics | None = None,
    ) -> None:
        self.scorer = scorer
        self.batching = batching
        self.max_batch = max_batch
        self.prepare = prepare
        self.finished = finished
        self.failed = failed
        self.metrics = metrics
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: object, arrived: float) -> None:
        """Hand over a request that arrived at `arrived` (time.monotonic)."""
        self._inbox.put((request, arrived))

    def close(self, drain: bool = True) -> None:
        """Score everything submitted, then stop; with `drain=False` (the benchmark, after an
        overloaded run), stop after the current batch and leave the rest unscored."""
        if not drain:
            self._abandon.set()
        self._inbox.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        pending = PendingQueue()
        stopping = False
        while not self._abandon.is_set():
            now = time.monotonic()
            policy = self.batching.policy(now)
            oldest = pending.oldest()
            if oldest is not None and (
                stopping
                or pending.has_high  # high priority is never held back to fill a batch
                or pending.events >= policy.size
                or now - oldest >= policy.max_wait
            ):
                self._run_batch(pending, policy)
                continue
            if stopping:
                return
            timeout = None if oldest is None else max(0.0, oldest + policy.max_wait - now)
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
                    self._admit(*item, pending)  # type: ignore[misc]

    def _admit(self, request: object, arrived: float, pending: PendingQueue) -> None:
        prepared = self.prepare(request)
        if prepared is None:
            self.finished([(request, np.empty(0, np.float32))])
            return
        features, priority = prepared
        self.batching.arrived(len(features), arrived)
        pending.add(Pending(request, features, arrived, priority))

    def _run_batch(self, pending: PendingQueue, policy: Policy) -> None:
        slices = pending.take(min(max(policy.size, policy.take), self.max_batch))
        features = np.concatenate([p.features[a:b] for p, a, b in slices])
        started = time.monotonic()
        try:
            scores = self.scorer.score(features)
        except ScoringFailed as exc:  # fail these requests, keep the thread
            log.error("scoring failed: %s", exc)
            for p in {id(p): p for p, _, _ in slices}.values():
                pending.discard(p)
                self.failed(p.job, exc)
            return
        seconds = time.monotonic() - started
        self.batching.observe(
            policy,
            np.array([started - p.arrived for p, _, _ in slices]),
            np.array([b - a for _, a, b in slices]),
            seconds,
            high_priority=any(p.priority == HIGH for p, _, _ in slices),
        )
        if self.metrics is not None:
            self.metrics.inference_seconds.observe(seconds)
            self.metrics.batch_size.observe(len(features))
        done = []
        offset = 0
        for p, a, b in slices:
            p.scores[a:b] = scores[offset : offset + b - a]
            offset += b - a
            p.done += b - a
            if p.done == p.size:
                done.append((p.job, p.scores))
        if done:
            self.finished(done)
