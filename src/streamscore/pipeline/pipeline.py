"""The hot path after decoding: admit -> dedupe -> score -> group commit -> windows -> ack.

    event loop            scorer thread                 writer thread
    ----------            -------------                 -------------
    submit(batch) ──q──▶  claim event_ids, queue  ──q──▶ coalesce scored requests
      (admission)         by priority; when the          append to the log + commit
                          batching policy says so,       stream time, late events
                          one forward call               update windows
    await future ◀────────────────────────────────────── resolve futures

Requests from many connections are coalesced twice: into forward calls whose size and wait the
batching policy chooses (`streamscore.batching`), and into one commit. A future resolves only
after the commit that holds its events, so a 2xx means durable. Both queues are bounded by
`Admission`: requests wait for room, then get `Overloaded`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamscore.batch import EventBatch, IngestResult
from streamscore.batching.controller import Batching, Policy
from streamscore.batching.pending import LOW, Pending, PendingQueue
from streamscore.ingest.dedupe import EventIdDeduper
from streamscore.pipeline.admission import Admission
from streamscore.score.scorer import Scorer, ScoringFailed
from streamscore.stats.counters import Counters
from streamscore.stats.metrics import Metrics
from streamscore.store import log_codec
from streamscore.store.base import Store, StoreUnavailable
from streamscore.windows.rolling_median import RollingMedians
from streamscore.windows.stream_time import StreamClock

log = logging.getLogger(__name__)

_STOP = object()
TRUNCATE_EVERY = 1.0  # seconds of wall time between log truncations


@dataclass(slots=True)
class _Job:
    batch: EventBatch
    future: asyncio.Future[IngestResult]
    loop: asyncio.AbstractEventLoop
    arrived: float  # monotonic
    kept: EventBatch | None = None  # set by the scorer: the events not seen before
    duplicates: int = 0


@dataclass(slots=True)
class _Scored:
    job: _Job
    kept: EventBatch  # events not seen before
    scores: np.ndarray
    duplicates: int


class Pipeline:
    def __init__(
        self,
        scorer: Scorer,
        store: Store,
        windows: RollingMedians,
        clock: StreamClock,
        deduper: EventIdDeduper,
        counters: Counters,
        model_id: int,
        max_batch: int,
        batching: Batching,
        admission: Admission,
        max_index_lag: int,
        wake_indexer: Callable[[], None],
        metrics: Metrics,
    ) -> None:
        self.scorer = scorer
        self.store = store
        self.windows = windows
        self.clock = clock
        self.deduper = deduper
        self.counters = counters
        self.model_id = model_id
        self.max_batch = max_batch
        self.batching = batching
        self.admission = admission
        self.max_index_lag = max_index_lag
        self.wake_indexer = wake_indexer
        self.metrics = metrics
        self.store_ok = True
        self.retention = max(clock.window, deduper.horizon)
        self._to_score: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._to_write: queue.SimpleQueue[_Scored | object] = queue.SimpleQueue()
        self._next_seq = store.last_seq() + 1
        self._commits: deque[tuple[int, float]] = deque()  # (last seq, stream time after)
        self._last_truncate = 0.0
        self._threads = [
            threading.Thread(target=self._score_loop, name="scorer", daemon=True),
            threading.Thread(target=self._write_loop, name="writer", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Finish what was submitted, then stop both threads."""
        self._to_score.put(_STOP)
        for thread in self._threads:
            thread.join()

    async def submit(self, batch: EventBatch) -> IngestResult:
        """Resolves once every new event of `batch` is durable; raises on overload or store failure."""
        if len(batch) == 0:
            return IngestResult()
        size = len(batch)
        await self.admission.acquire(size, low=batch.priority == LOW)
        loop = asyncio.get_running_loop()
        job = _Job(batch, loop.create_future(), loop, time.monotonic())

        def finished(future: asyncio.Future[IngestResult]) -> None:
            # Released when the pipeline is done with the events, even if the client left.
            self.admission.release(size)
            if not future.cancelled():
                future.exception()  # retrieved, so a departed client's error is not logged

        job.future.add_done_callback(finished)
        self._to_score.put(job)
        return await asyncio.shield(job.future)

    # -- scorer thread -------------------------------------------------------------------

    def _score_loop(self) -> None:
        """Queue arriving requests; run a forward call whenever the policy says one is due."""
        pending = PendingQueue()
        stopping = False
        while True:
            now = time.monotonic()
            policy = self.batching.policy(now)
            oldest = pending.oldest()
            if pending.events and (
                stopping
                or pending.has_high  # high priority is never held back to fill a batch
                or pending.events >= policy.size
                or now - oldest >= policy.max_wait  # type: ignore[operator]
            ):
                self._run_batch(pending, policy)
                continue
            if stopping:
                self._to_write.put(_STOP)
                return
            timeout = None if oldest is None else max(0.0, oldest + policy.max_wait - now)
            try:
                items = [self._to_score.get(timeout=timeout)]
            except queue.Empty:
                continue
            while True:  # take everything already queued before deciding again
                try:
                    items.append(self._to_score.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is _STOP:
                    stopping = True
                else:
                    self._admit(item, pending)  # type: ignore[arg-type]

    def _admit(self, job: _Job, pending: PendingQueue) -> None:
        """Claim the request's event_ids (a duplicate costs no inference) and queue the rest."""
        fresh = self.deduper.claim(job.batch.event_ids)
        job.kept = job.batch.select(fresh)
        job.duplicates = int((~fresh).sum())
        if not len(job.kept):
            self._to_write.put([_Scored(job, job.kept, np.empty(0, np.float32), job.duplicates)])
            return
        self.batching.arrived(len(job.kept), job.arrived)
        features = job.kept.features.astype(np.float32)
        pending.add(Pending(job, features, job.arrived, job.batch.priority))

    def _run_batch(self, pending: PendingQueue, policy: Policy) -> None:
        slices = pending.take(min(policy.size, self.max_batch))
        features = np.concatenate([p.features[a:b] for p, a, b in slices])
        started = time.monotonic()
        try:
            scores = self.scorer.score(features)
        except ScoringFailed as exc:  # fail these requests, keep the thread
            log.error("scoring failed: %s", exc)
            for p in {id(p): p for p, _, _ in slices}.values():
                pending.discard(p)
                job: _Job = p.job  # type: ignore[assignment]
                self.deduper.release(job.kept.event_ids)  # type: ignore[union-attr]
                _resolve(job, exc)
            return
        seconds = time.monotonic() - started
        self.batching.observe(
            policy,
            np.array([started - p.arrived for p, _, _ in slices]),
            np.array([b - a for _, a, b in slices]),
            seconds,
            high_priority=any(p.priority > 1 for p, _, _ in slices),
        )
        self.metrics.inference_seconds.observe(seconds)
        self.metrics.batch_size.observe(len(features))
        finished = []
        offset = 0
        for p, a, b in slices:
            p.scores[a:b] = scores[offset : offset + b - a]
            offset += b - a
            p.done += b - a
            if p.done == p.size:
                job = p.job  # type: ignore[assignment]
                finished.append(_Scored(job, job.kept, p.scores, job.duplicates))  # type: ignore[arg-type]
        if finished:
            self._to_write.put(finished)

    # -- writer thread -------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            groups, stop = _drain(self._to_write)
            scored = [s for group in groups for s in group]
            if scored:
                try:
                    self._commit(scored)
                except Exception as exc:  # a bug here must fail requests, not stop the writer
                    log.exception("commit failed")
                    for s in scored:
                        _resolve(s.job, exc)
            if stop:
                return

    @property
    def index_lag(self) -> int:
        """Acknowledged events not yet in the history index."""
        return self._next_seq - 1 - self.store.indexed_seq

    def _wait_for_indexer(self) -> None:
        """Hold commits while the history index trails by more than `max_index_lag` events.

        The wait backs up into admission, which answers 503 once `max_wait` passes: ingest
        slows to what can be indexed instead of letting history fall minutes behind.
        """
        while self.index_lag > self.max_index_lag:
            self.wake_indexer()
            time.sleep(0.005)

    def _commit(self, scored: list[_Scored]) -> None:
        self._wait_for_indexer()
        batch = EventBatch.concat([s.kept for s in scored])
        scores = np.concatenate([s.scores for s in scored])
        duplicates = sum(s.duplicates for s in scored)
        n = len(batch)
        clock = StreamClock(self.clock.window, self.clock.time)
        late = clock.advance(batch.timestamps)
        events = log_codec.encode(
            batch.user_ids, batch.event_ids, batch.timestamps, scores, batch.features
        )
        started = time.perf_counter()
        try:
            self.store.append(
                self._next_seq, events, self.model_id, int(late.sum()), duplicates, clock.time, n
            )
        except StoreUnavailable as exc:
            self.store_ok = False
            log.error("store write failed; %d events not acknowledged: %s", n, exc)
            self.deduper.release(batch.event_ids)
            for s in scored:
                _resolve(s.job, exc)
            return
        self.store_ok = True
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self._next_seq += n
        self.clock.time = clock.time
        self._commits.append((self._next_seq - 1, clock.time))

        live = batch.timestamps >= clock.cutoff
        if live.any():
            self.windows.insert(
                [u for u, k in zip(batch.user_ids, live, strict=True) if k],
                batch.timestamps[live],
                scores[live],
            )
        self.windows.expire(clock.cutoff)
        self.deduper.committed(batch.event_ids, clock.time)
        self.deduper.evict(clock.time)
        self.counters.events += n
        self.counters.late += int(late.sum())
        self.counters.duplicates += duplicates

        offset = 0
        for s in scored:
            size = len(s.kept)
            _resolve(
                s.job, IngestResult(size, s.duplicates, int(late[offset : offset + size].sum()))
            )
            offset += size
        self._maybe_truncate()

    def _maybe_truncate(self) -> None:
        """Drop log rows that are indexed and were committed before the retained horizon."""
        now = time.monotonic()
        if now - self._last_truncate < TRUNCATE_EVERY:
            return
        self._last_truncate = now
        boundary = None
        horizon = self.clock.time - self.retention
        while self._commits and self._commits[0][1] < horizon:
            boundary = self._commits.popleft()[0]
        if boundary is not None:
            self.store.truncate_log(boundary)


def _drain(q: queue.SimpleQueue) -> tuple[list, bool]:
    """Block for one item, then take what is already queued; True once `_STOP` is seen."""
    items = [q.get()]
    if items[0] is _STOP:
        return [], True
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return items, False
        if item is _STOP:
            return items, True
        items.append(item)


def _resolve(job: _Job, outcome: IngestResult | BaseException) -> None:
    def settle() -> None:
        if job.future.done():  # settled already (a job is resolved once; this is a guard)
            return
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    job.loop.call_soon_threadsafe(settle)
