"""Drift monitoring in the serving path: the commit step feeds each group of acknowledged events
to a `DriftMonitor` after acknowledging them, so the check costs the ack nothing; `/drift`,
`/metrics` and the dashboard read it under the same lock. Monitored: every column the model
reads (raw `features[i]`, and computed features when the model's sidecar names them, as the
model saw them) and the active model's score.

It also keeps the last `window_events` raw rows, so `POST /drift/reference` can re-pin the
reference to the most recent events without touching the store.

The references persist in the store (`state` key `drift`): saved at most every `SAVE_EVERY`
seconds from the commit step, after a re-pin and at shutdown, and restored at start when the
monitor's settings are unchanged. A value that is new (a new model version's score) starts
collecting its reference; one no longer monitored is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streamscore.drift.monitor import DriftMonitor
from streamscore.events import EventBatch
from streamscore.store.base import Store
from streamscore.windows.event_time import StreamClock

log = logging.getLogger(__name__)

STATE_KEY = "drift"
SAVE_EVERY = 30.0  # seconds between saves of the references


def input_names(raw_width: int, computed: Sequence[str] = ()) -> list[str]:
    """The names of the model's input columns, in order: raw features, then computed ones.

    >>> input_names(2, ["events_1h"])
    ['features[0]', 'features[1]', 'events_1h']
    """
    return [f"features[{i}]" for i in range(raw_width)] + list(computed)


class DriftWatch(Collector):
    def __init__(
        self,
        inputs: list[str],
        active_version: Callable[[], str],
        window_events: int,
        store: Store,
        **monitor: Any,
    ) -> None:
        """`inputs` names the model's input columns (`input_names`); `active_version()` names
        the scoring model: when it changes (an activation), the score is monitored under the
        new name, against a reference collected afresh."""
        self.active_version = active_version
        names = [*inputs, f"score@{active_version()}"]
        _warm_up()
        fresh = DriftMonitor(names, window_events=window_events, **monitor)
        self.monitor = _restored(store.load_state(STATE_KEY), fresh) or fresh
        self.store = store
        self._saved = time.monotonic()
        self.lock = threading.Lock()
        self._recent = np.zeros((window_events, len(names)))
        self._recent_ts = np.zeros(window_events)
        self._recent_count = 0  # rows ever written to the ring

    def observe(
        self, events: EventBatch, inputs: np.ndarray, scores: np.ndarray, clock: StreamClock
    ) -> None:
        """Called by the commit step with the events it just acknowledged."""
        if not len(events):
            return
        rows = np.column_stack([inputs.astype(np.float64), scores.astype(np.float64)])
        with self.lock:
            score = f"score@{self.active_version()}"
            if self.monitor.names[-1] != score:
                self.monitor.remove_value(self.monitor.names[-1])
                self.monitor.add_value(score)
            self.monitor.update(rows, events.timestamps)
            self._remember(rows, events.timestamps)
            if time.monotonic() - self._saved >= SAVE_EVERY:
                self._save()

    def _save(self) -> None:
        self._saved = time.monotonic()
        self.store.save_state(STATE_KEY, self.monitor.to_bytes())

    def close(self) -> None:
        """Save the references (at shutdown)."""
        with self.lock:
            self._save()

    def _remember(self, rows: np.ndarray, timestamps: np.ndarray) -> None:
        size = len(self._recent)
        rows, timestamps = rows[-size:], timestamps[-size:]
        at = (self._recent_count + np.arange(len(rows))) % size
        self._recent[at] = rows
        self._recent_ts[at] = timestamps
        self._recent_count += len(rows)

    def report(self) -> dict[str, Any]:
        with self.lock:
            return self.monitor.report()

    def repin_recent(self) -> int:
        """Re-pin every value's reference to the most recent events; how many were used."""
        with self.lock:
            n = min(self._recent_count, len(self._recent))
            if n == 0:
                raise ValueError("no events yet to pin a reference to")
            self.monitor.repin(self._recent[:n], self._recent_ts[:n])
            self._save()
            return n

    def collect(self) -> Iterator[object]:
        """Prometheus: PSI, KS and drifted state per value; transitions by kind."""
        report = self.report()
        psi = GaugeMetricFamily("streamscore_drift_psi", "PSI vs the reference", labels=["value"])
        ks = GaugeMetricFamily("streamscore_drift_ks", "binned KS statistic", labels=["value"])
        active = GaugeMetricFamily(
            "streamscore_drift_active", "1 while the value is drifted", labels=["value"]
        )
        for value in report["values"]:
            name = value["name"]
            nan = float("nan")  # no reference yet
            psi.add_metric([name], nan if value["psi"] is None else value["psi"])
            ks.add_metric([name], nan if value["ks"] is None else value["ks"])
            active.add_metric([name], float(value["drifted"]))
        transitions = CounterMetricFamily(
            "streamscore_drift_transitions", "drift alerts raised and cleared", labels=["state"]
        )
        for state, count in self.monitor.transitions.items():
            transitions.add_metric([state], count)
        yield from (psi, ks, active, transitions)


def _warm_up() -> None:
    """Load the compiled kernels now, not in the first commit that feeds the monitor."""
    rows = np.random.default_rng(0).random((8, 1))
    tiny = DriftMonitor(["warm-up"], reference_events=4, window_events=4, check_every=2)
    tiny.update(rows, np.arange(8.0))
    tiny.report()


def _restored(saved: bytes | None, fresh: DriftMonitor) -> DriftMonitor | None:
    """The saved monitor, its values matched to `fresh`'s names; None if it cannot be used."""
    if saved is None:
        return None
    try:
        monitor = DriftMonitor.from_bytes(saved)
    except Exception:  # a blob of another release: start afresh rather than fail the start
        log.warning("ignoring saved drift references that cannot be read")
        return None
    if not monitor.same_config(fresh):
        log.info("drift settings changed: collecting new references")
        return None
    for name in [n for n in monitor.names if n not in fresh.names]:
        monitor.remove_value(name)
    for name in [n for n in fresh.names if n not in monitor.names]:
        monitor.add_value(name)
    return monitor if monitor.names == fresh.names else None
