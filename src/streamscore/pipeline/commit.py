"""The commit step (its own thread): group the scored jobs of many requests into one durable
write, then move stream time, update the windowed statistics and the dedupe set, and
acknowledge each job with what its events came to.

One append (one fsync on SQLite, one COMMIT on PostgreSQL) covers every job scored since the
last one, so the cost of durability is paid per group, not per request. A job is resolved only
after the write that holds its events: a 2xx means durable. Any failure, of the store or of
this code, fails exactly the jobs of that group and releases exactly their event ids.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

import numpy as np

from streamscore.events import EventBatch, IngestResult
from streamscore.pipeline.dedupe import EventIdDeduper
from streamscore.pipeline.job import Job
from streamscore.scoring.routing import Route
from streamscore.store import log_codec
from streamscore.store.base import Store, StoreUnavailable
from streamscore.telemetry.counters import Counters
from streamscore.telemetry.metrics import Metrics
from streamscore.windows.base import WindowedStatistic
from streamscore.windows.event_time import StreamClock

log = logging.getLogger(__name__)

_STOP = object()
TRUNCATE_EVERY = 1.0  # seconds of wall time between log truncations


class Recorder(Protocol):
    def append(self, item: tuple[EventBatch, np.ndarray], /) -> None: ...


class Observer(Protocol):
    """Sees each acknowledged group after its ack (drift, experiments): the events, the rows the
    model read (raw features and computed ones, float32), and the scores."""

    def observe(
        self, events: EventBatch, inputs: np.ndarray, scores: np.ndarray, clock: StreamClock
    ) -> None: ...


class _Call:
    """A function to run on the commit thread between two groups (a model swap's steps)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


class HistoryBehind(StoreUnavailable):
    """The history index trailed too far for too long: the group is refused (503)."""


class Committer:
    def __init__(
        self,
        store: Store,
        clock: StreamClock,
        statistics: list[WindowedStatistic],
        observers: list[Observer],
        deduper: EventIdDeduper,
        counters: Counters,
        metrics: Metrics,
        model_id: int,
        max_index_lag: int,
        index_wait: float,
        wake_indexer: Callable[[], None],
        max_log_events: int = 10_000_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.statistics = statistics  # updated before the ack: readers see acked events
        self.observers = observers  # updated after it (drift): they cost the ack nothing
        self.deduper = deduper
        self.counters = counters
        self.metrics = metrics
        self.model_id = model_id  # the batch's model, for rows the scoring stage left at -1
        self.window_route: Route | None = None  # what the windows' scores come from
        self.recorders: list[Recorder] = []  # get each group's (events, model inputs)
        self.max_index_lag = max_index_lag
        self.max_log_events = max_log_events
        self.log_evicted_early = 0  # group commits truncated from the log inside the horizon
        self.index_wait = index_wait
        self.wake_indexer = wake_indexer
        self.store_ok = True
        self.crashes = 0  # groups failed by a bug in this step (not by the store)
        self.log_horizon = max(clock.window, deduper.horizon)  # stream seconds the log keeps
        self._inbox: queue.SimpleQueue[list[Job] | object] = queue.SimpleQueue()
        self._next_seq = store.last_seq() + 1
        self._commits: deque[tuple[int, float]] = deque()  # (last seq, stream time after)
        self._last_truncate = 0.0
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, jobs: list[Job]) -> None:
        """Scored jobs, from the scoring stage's thread."""
        self._inbox.put(jobs)

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on the commit thread between two groups; its result or error, later."""
        item = _Call(fn)
        self._inbox.put(item)
        return item.future

    def close(self) -> None:
        """Commit everything submitted, then stop."""
        self._inbox.put(_STOP)
        self._thread.join()

    @property
    def index_lag(self) -> int:
        """Acknowledged events not yet in the history index."""
        return self._next_seq - 1 - self.store.indexed_seq

    def _run(self) -> None:
        while True:
            groups, stop = _drain(self._inbox)
            calls = [g for g in groups if isinstance(g, _Call)]
            jobs = [job for group in groups if not isinstance(group, _Call) for job in group]
            if jobs:
                try:
                    self._commit(jobs)
                except Exception as exc:  # a bug must fail its requests, not stop the thread
                    self.crashes += 1
                    log.exception("commit failed")
                    self.fail(jobs, exc)
            for call in calls:
                try:
                    call.future.set_result(call.fn())
                except Exception as exc:
                    call.future.set_exception(exc)
            if stop:
                return

    def fail(self, jobs: list[Job], exc: BaseException) -> None:
        """Refuse jobs that will not be committed: release their ids, answer their requests."""
        for job in jobs:
            self.deduper.release(job.events.event_ids)
            job.resolve(exc)

    def _wait_for_indexer(self) -> None:
        """Hold commits while the history index trails by more than `max_index_lag` events.

        The wait backs up into admission (503 once `max_wait` passes), so ingest slows to what
        can be indexed instead of letting history fall minutes behind. If the index does not
        catch up within `index_wait` seconds (its store keeps failing), the group is refused.
        """
        deadline = time.monotonic() + self.index_wait
        while self.index_lag > self.max_index_lag:
            if time.monotonic() > deadline:
                raise HistoryBehind(f"history index is {self.index_lag} events behind; retry later")
            self.wake_indexer()
            time.sleep(0.005)

    def _commit(self, jobs: list[Job]) -> None:
        try:
            self._wait_for_indexer()
        except HistoryBehind as exc:
            self.fail(jobs, exc)
            return
        events = EventBatch.concat([job.events for job in jobs])
        scores = np.concatenate([job.scores for job in jobs])
        duplicates = sum(job.duplicates for job in jobs)
        n = len(events)
        model_ids = np.concatenate([job.model_ids for job in jobs])
        model_ids[model_ids < 0] = self.model_id
        variants = (
            None
            if all(job.variants is None for job in jobs)
            else [v for job in jobs for v in (job.variants or [None] * job.size)]
        )
        clock = StreamClock(self.clock.window, self.clock.time)
        late = clock.advance(events.timestamps)
        encoded = log_codec.encode(
            events.user_ids,
            events.event_ids,
            events.timestamps,
            scores,
            events.features,
            event_types=events.event_types,
            attributes=events.attributes,
            model_ids=model_ids,
            variants=variants,
        )
        started = time.perf_counter()
        try:
            self.store.append(
                self._next_seq, encoded, self.model_id, int(late.sum()), duplicates, clock.time, n
            )
        except StoreUnavailable as exc:
            self.store_ok = False
            self.metrics.store_failures.inc()
            log.error("store write failed; %d events not acknowledged: %s", n, exc)
            self.fail(jobs, exc)
            return
        self.store_ok = True
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self._next_seq += n
        self.clock.time = clock.time
        self._commits.append((self._next_seq - 1, clock.time))
        inputs = np.concatenate([job.features for job in jobs])
        window_scores = scores
        if self.window_route is not None:
            window_scores = self.window_route.window_scores(
                events.user_ids, inputs, scores, model_ids
            )
        for statistic in self.statistics:
            statistic.update(events, window_scores, clock)
        for recorder in self.recorders:
            recorder.append((events, inputs))
        self.deduper.committed(events.event_ids, clock.time)
        self.deduper.evict(clock.time)
        self.counters.events += n
        self.counters.late += int(late.sum())
        self.counters.duplicates += duplicates
        offset = 0
        for job in jobs:
            job_late = int(late[offset : offset + job.size].sum())
            job.resolve(IngestResult(job.size, job.duplicates, job_late))
            offset += job.size
        for observer in self.observers:
            try:
                observer.observe(events, inputs, scores, clock)
            except Exception:  # an observer's bug must not fail what is already acknowledged
                log.exception("observer %s failed", type(observer).__name__)
        self._maybe_truncate()

    def _maybe_truncate(self) -> None:
        """Drop log rows that are indexed and were committed before the log horizon, and,
        oldest first, beyond `max_log_events` (when stream time stands still, a backfill
        would otherwise grow the log, this list and the restart time without bound)."""
        now = time.monotonic()
        if now - self._last_truncate < TRUNCATE_EVERY:
            return
        self._last_truncate = now
        boundary = None
        horizon = self.clock.time - self.log_horizon
        while self._commits and self._commits[0][1] < horizon:
            boundary = self._commits.popleft()[0]
        last = self._next_seq - 1
        while self._commits and (
            last - self._commits[0][0] > self.max_log_events
            or len(self._commits) > self.max_log_events
        ):
            boundary = self._commits.popleft()[0]
            self.log_evicted_early += 1
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
