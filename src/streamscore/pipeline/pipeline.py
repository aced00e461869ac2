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
from streamscore.batching.controller import Batching
from streamscore.batching.pending import LOW
from streamscore.batching.stage import ScoringStage
from streamscore.ingest.dedupe import EventIdDeduper
from streamscore.pipeline.admission import Admission
from streamscore.score.scorer import Scorer
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
        self.store = store
        self.windows = windows
        self.clock = clock
        self.deduper = deduper
        self.counters = counters
        self.model_id = model_id
        self.admission = admission
        self.max_index_lag = max_index_lag
        self.wake_indexer = wake_indexer
        self.metrics = metrics
        self.store_ok = True
        self.retention = max(clock.window, deduper.horizon)
        self._to_write: queue.SimpleQueue[_Scored | object] = queue.SimpleQueue()
        self._next_seq = store.last_seq() + 1
        self._commits: deque[tuple[int, float]] = deque()  # (last seq, stream time after)
        self._last_truncate = 0.0
        self.scoring = ScoringStage(
            scorer,
            batching,
            max_batch,
            self._prepare,
            self._scored,
            self._failed,
            metrics,  # type: ignore[arg-type]
        )
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)

    def start(self) -> None:
        self.scoring.start()
        self._writer.start()

    def close(self) -> None:
        """Finish what was submitted, then stop both threads."""
        self.scoring.close()
        self._to_write.put(_STOP)
        self._writer.join()

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
        self.scoring.submit(job, job.arrived)
        return await asyncio.shield(job.future)

    # -- scorer thread (the scoring stage calls these) ---------------------------------------

    def _prepare(self, job: _Job) -> tuple[np.ndarray, int] | None:
        """Claim the request's event_ids (a duplicate costs no inference); its new events."""
        fresh = self.deduper.claim(job.batch.event_ids)
        job.kept = job.batch.select(fresh)
        job.duplicates = int((~fresh).sum())
        if not len(job.kept):
            return None
        return job.kept.features.astype(np.float32), job.batch.priority

    def _scored(self, done: list[tuple[_Job, np.ndarray]]) -> None:
        self._to_write.put([_Scored(job, job.kept, scores, job.duplicates) for job, scores in done])

    def _failed(self, job: _Job, exc: BaseException) -> None:
        self.deduper.release(job.kept.event_ids)  # only the ids it claimed: retries stay possible
        _resolve(job, exc)

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
