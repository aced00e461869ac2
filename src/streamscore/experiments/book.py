"""The service's experiments: at most one running, fed by the commit step after each ack, and
kept in the store's state so that they survive restarts without losing a count.

The book is saved with a mark, the service's committed-event total it includes, at most every
`SAVE_EVERY` seconds and at every start, stop and close. After a crash, the events committed
after the mark are the last `total - mark` events of the log (which keeps at least the window,
far more than a second of events) and are observed again, so the counts are exactly those of
a service that never stopped.

>>> class Store(dict):
...     def save_state(self, key, value): self[key] = value
...     def load_state(self, key): return self.get(key)
>>> book = ExperimentBook(Store())
>>> exp = book.start("demo", [Variant("control", "a@1", 1), Variant("treatment", "b@2", 1)],
...                  {"event_type": "buy"}, events_total=0)
>>> book.running is exp, book.stop("demo", events_total=0), book.running
(True, True, None)
>>> ExperimentBook(book.store).get("demo").status
'stopped'
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import msgspec
import numpy as np

from streamscore.events import EventBatch
from streamscore.experiments.experiment import Experiment, Variant
from streamscore.store.log_codec import LoggedBatch
from streamscore.windows.event_time import StreamClock

log = logging.getLogger(__name__)

STATE_KEY = "experiments"
SAVE_EVERY = 1.0  # seconds between saves while events flow


class StateStore(Protocol):
    def save_state(self, key: str, value: bytes) -> None: ...
    def load_state(self, key: str) -> bytes | None: ...


class ExperimentConflict(ValueError):
    """Another experiment runs, or the name is taken (409)."""


class _Saved(msgspec.Struct):
    mark: int
    experiments: dict[str, bytes]
    running: str | None


class ExperimentBook:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.lock = threading.Lock()  # the commit thread observes while HTTP threads read
        self.experiments: dict[str, Experiment] = {}
        self.running: Experiment | None = None
        self.mark = 0  # committed events the book has seen
        self._saved_at = 0.0
        blob = store.load_state(STATE_KEY)
        if blob is not None:
            saved = msgspec.msgpack.decode(blob, type=_Saved)
            self.mark = saved.mark
            self.experiments = {n: Experiment.from_bytes(b) for n, b in saved.experiments.items()}
            if saved.running is not None:
                self.running = self.experiments[saved.running]

    def get(self, name: str) -> Experiment | None:
        return self.experiments.get(name)

    def start(
        self,
        name: str,
        variants: Sequence[Variant],
        outcome: Mapping[str, str],
        events_total: int,
        alpha: float = 0.05,
    ) -> Experiment:
        """Raises ValueError (bad definition) or ExperimentConflict."""
        experiment = Experiment(name, variants, outcome, alpha)
        with self.lock:
            if self.running is not None:
                raise ExperimentConflict(f"experiment {self.running.name!r} is running; stop it")
            if name in self.experiments:
                raise ExperimentConflict(f"experiment {name!r} exists; pick another name")
            self.experiments[name] = experiment
            self.running = experiment
            self._save(events_total)
        return experiment

    def stop(self, name: str, events_total: int) -> bool:
        """False if no such experiment; stopping a stopped one changes nothing."""
        with self.lock:
            experiment = self.experiments.get(name)
            if experiment is None:
                return False
            experiment.stop()
            if self.running is experiment:
                self.running = None
            self._save(events_total)
        return True

    def result(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            experiment = self.experiments.get(name)
            return None if experiment is None else experiment.result()

    def observe(self, events: EventBatch, scores: np.ndarray, events_total: int) -> None:
        """One committed group (the commit thread, after its ack)."""
        with self.lock:
            if self.running is not None and len(events):
                types = events.event_types or [None] * len(events)
                self.running.observe(events.user_ids, events.timestamps, types, scores)
            self.mark = events_total
            if self.running is not None and time.monotonic() - self._saved_at >= SAVE_EVERY:
                self._save(events_total)

    def save(self, events_total: int) -> None:
        with self.lock:
            self._save(events_total)

    def _save(self, events_total: int) -> None:
        self.mark = events_total
        saved = _Saved(
            events_total,
            {n: e.to_bytes() for n, e in self.experiments.items()},
            None if self.running is None else self.running.name,
        )
        self.store.save_state(STATE_KEY, msgspec.msgpack.encode(saved))
        self._saved_at = time.monotonic()

    def replay(self, batches: Iterable[LoggedBatch], events_total: int) -> int:
        """Observe the log's last `events_total - mark` events again (after a crash); returns
        how many were replayed."""
        missing = events_total - self.mark
        if missing <= 0 or self.running is None:
            self.mark = max(self.mark, events_total)
            return 0
        tail: deque[LoggedBatch] = deque()
        held = 0
        for batch in batches:
            tail.append(batch)
            held += len(batch.user_ids)
            while tail and held - len(tail[0].user_ids) >= missing:
                held -= len(tail.popleft().user_ids)
        if held < missing:
            log.warning("experiment replay: the log holds %d of %d missing events", held, missing)
        skip = max(0, held - missing)
        for batch in tail:
            n = len(batch.user_ids)
            start = min(skip, n)
            skip -= start
            types = batch.event_types or [None] * n
            self.running.observe(
                batch.user_ids[start:],
                batch.timestamps[start:],
                types[start:],
                batch.scores[start:],
            )
        self.save(events_total)
        return min(held, missing)


class ExperimentObserver:
    """The book as a commit-step `Observer`."""

    def __init__(self, book: ExperimentBook, events_total: Any) -> None:
        self.book = book
        self.events_total = events_total  # a callable: the service's committed-event total

    def observe(
        self, events: EventBatch, inputs: np.ndarray, scores: np.ndarray, clock: StreamClock
    ) -> None:
        self.book.observe(events, scores, self.events_total())
