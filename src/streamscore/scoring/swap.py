"""Switch the scoring route (a new active version, an experiment starting or stopping) so that
no request fails or waits for it and the windows never mix two models' scores.

The commit step keeps the model inputs of the windowed events (`WindowInputs`, filled from the
log at start, so the log stays the recovery path). A switch then:

1. On the commit thread, between two groups: copies the list of those inputs (pointers only)
   and starts recording what is committed from then on.
2. In the caller's thread: re-scores the copied inputs by the new route into fresh windows,
   then the recorded groups, while commits go on into the old windows.
3. On the commit thread again: re-scores the few groups recorded since, then swaps the windows,
   the commit step's window route and the scoring stage's route at once. A median read before
   sees only the old model's scores, one read after only the new one's. Rows scored by the old
   route but committed after the swap are re-scored for the windows by the commit step
   (`Route.window_scores`); their stored score keeps the model that produced it.

Commits wait only for steps 1 and 3 (`pause_seconds`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from streamscore.events import EventBatch
from streamscore.pipeline.commit import Committer
from streamscore.scoring.routing import Route
from streamscore.scoring.stage import ScoringStage
from streamscore.windows.event_time import StreamClock
from streamscore.windows.rolling_median import RollingMedians

STEP_TIMEOUT = 120.0  # seconds a step may wait for the commit thread
CHUNK = 16_384  # rows per forward call while re-scoring
CATCH_UP_ROUNDS = 8  # background passes over the recorded groups before the final step
NICENESS = 10  # the rebuild thread yields the CPU to ingest (Linux: a per-thread nice value)

Entry = tuple[list[str], np.ndarray, np.ndarray, float]  # user ids, timestamps, inputs, max ts


class WindowInputs:
    """The model inputs of the events still in the window, one entry per commit (whole
    commits are dropped once all their events left the window: `clock` is the commit step's).

    User ids are kept interned: the decoder makes a new string per event (~60 bytes), which
    would otherwise stay alive for the whole window beside an 8-byte pointer.

    >>> clock = StreamClock(10.0, 100.0)
    >>> kept = WindowInputs(clock)
    >>> batch = EventBatch(["a"], np.array([95.0]), np.ones((1, 1)), [None], np.arange(1))
    >>> kept.append((batch, np.ones((1, 1), "f4")))
    >>> clock.time = 106.0
    >>> kept.append((EventBatch.empty(1), np.zeros((0, 1), "f4")))
    >>> kept.events
    0
    """

    def __init__(self, clock: StreamClock) -> None:
        self.clock = clock
        self.entries: deque[Entry] = deque()
        self.events = 0

    def append(self, item: tuple[EventBatch, np.ndarray]) -> None:
        events, inputs = item
        if len(events):
            users = list(map(sys.intern, events.user_ids))
            entry = (users, events.timestamps, inputs, float(events.timestamps.max()))
            self.entries.append(entry)
            self.events += len(events)
        cutoff = self.clock.cutoff
        while self.entries and self.entries[0][3] < cutoff:
            self.events -= len(self.entries.popleft()[0])


class Swapper:
    def __init__(
        self,
        committer: Committer,
        stage: ScoringStage,
        inputs: WindowInputs,
        replace_windows: Callable[[RollingMedians], None],
    ) -> None:
        self.committer = committer
        self.stage = stage
        self.inputs = inputs
        self.replace_windows = replace_windows
        self.last: dict[str, Any] | None = None  # the figures of the latest swap
        self._lock = threading.Lock()  # one swap at a time

    def install(self, route: Route, model_id: int) -> None:
        """Use `route` from now on, without a rebuild (at start: windows recovered under it)."""
        self.committer.window_route = route
        self.committer.model_id = model_id
        self.stage.route = route

    def switch(self, route: Route, model_id: int) -> dict[str, Any]:
        """Blocks the caller for the rebuild; commits only for `pause_seconds`."""
        outcome: list[Any] = []

        def rebuild() -> None:
            # Not on Linux: the thread keeps the normal priority.
            with contextlib.suppress(AttributeError, OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
            try:
                outcome.append(self._switch(route, model_id))
            except BaseException as exc:
                outcome.append(exc)

        with self._lock:
            worker = threading.Thread(target=rebuild, name="model-swap", daemon=True)
            worker.start()
            worker.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _switch(self, route: Route, model_id: int) -> dict[str, Any]:
        started = time.perf_counter()
        recorder: list[tuple[EventBatch, np.ndarray]] = []

        def snapshot() -> tuple[list[Entry], float, float]:
            t = time.perf_counter()
            self.committer.recorders.append(recorder)
            entries = list(self.inputs.entries)
            return entries, self.committer.clock.time, time.perf_counter() - t

        entries, now, pause_snapshot = self.committer.call(snapshot).result(STEP_TIMEOUT)
        rebuilt = RollingMedians()
        cutoff = StreamClock(self.committer.clock.window, now).cutoff
        done = 0
        try:
            rebuild_started = time.perf_counter()
            rescored = _rescore(rebuilt, route, entries, cutoff)
            rebuild_seconds = time.perf_counter() - rebuild_started
            del entries
            for _ in range(CATCH_UP_ROUNDS):  # the groups committed meanwhile, off the thread
                end = len(recorder)
                if end == done:
                    break
                _rescore(rebuilt, route, _entries(recorder[done:end]), cutoff)
                done = end
        except BaseException:
            self.committer.call(lambda: self._forget(recorder))
            raise

        def finish() -> tuple[int, float]:
            t = time.perf_counter()
            self._forget(recorder)
            last = _rescore(rebuilt, route, _entries(recorder[done:]), cutoff)
            if np.isfinite(self.committer.clock.time):
                rebuilt.expire(self.committer.clock.cutoff)
            self.replace_windows(rebuilt)
            self.install(route, model_id)
            return last, time.perf_counter() - t

        caught_up, pause_switch = self.committer.call(finish).result(STEP_TIMEOUT)
        self.last = {
            "rescored_events": rescored,
            "rebuild_seconds": rebuild_seconds,
            "rescore_seconds_per_million": rebuild_seconds / rescored * 1e6 if rescored else None,
            "recorded_groups": len(recorder),
            "caught_up_on_commit_thread": caught_up,
            "pause_seconds": pause_snapshot + pause_switch,
            "total_seconds": time.perf_counter() - started,
        }
        return self.last

    def _forget(self, recorder: object) -> None:
        self.committer.recorders = [r for r in self.committer.recorders if r is not recorder]


def _entries(recorded: list[tuple[EventBatch, np.ndarray]]) -> list[Entry]:
    return [(events.user_ids, events.timestamps, inputs, 0.0) for events, inputs in recorded]


def _rescore(windows: RollingMedians, route: Route, entries: list[Entry], cutoff: float) -> int:
    """Insert the entries' events at or after `cutoff`, scored by `route`, in large calls."""
    total = 0
    pending: list[Entry] = []
    size = 0
    for k, entry in enumerate(entries):
        pending.append(entry)
        size += len(entry[0])
        if size < CHUNK and k + 1 < len(entries):
            continue
        users = [u for e in pending for u in e[0]]
        timestamps = np.concatenate([e[1] for e in pending])
        inputs = np.concatenate([e[2] for e in pending])
        pending, size = [], 0
        live = timestamps >= cutoff
        if not live.all():
            keep = np.flatnonzero(live)
            users = [users[i] for i in keep.tolist()]
            timestamps, inputs = timestamps[keep], inputs[keep]
        if len(users):
            windows.insert(users, timestamps, route.score(inputs, users).scores)
            total += len(users)
        time.sleep(0)  # hand the GIL to the ingest threads between chunks
    return total
