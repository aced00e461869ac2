"""Drift monitoring of K named values (model inputs, computed features, scores) as events stream by.

Each value first collects a **reference**: its first `reference_events` values (after start, after
`add_value`/`reset_value`), or data given to `repin`. The reference then fixes the value's
quantile bins (`bins`, default 20: 5 % of the reference each, enough resolution for PSI's usual
reading and few enough that a 10,000-event window puts ~500 events in each bin). From then on the
**current** distribution is the value's last `window_events` events, counted in those bins.

Every `check_every` events (at the end of the batch that reaches the mark; at most one check per
batch) each value whose window holds at least a tenth of `window_events` is tested: it is in
breach when its PSI exceeds `psi_threshold`, or its binned two-sample KS p-value is below
`p_threshold / K` (Bonferroni over the K values monitored). State changes need the evidence to
last: a value becomes `drifted` at a check when it has been in breach at every check from one at
least `min_events` events earlier (so, at the defaults, two consecutive checks 1,000 events
apart), and clears, symmetrically, after `min_events` events of checks without breach. `since` is
the time of the first check of the run that changed the state. A Page-Hinkley detector per value
(`change_delta`, `change_threshold`) reports when a value's mean changed (`change_points`).

Every transition is logged (JSON fields in `extra`), counted in `transitions` and kept, with the
change points, in bounded lists (the last `history`). `to_bytes`/`from_bytes` keep the references
(collected or in progress) across restarts; the current windows, states and counters restart.

>>> rng = np.random.default_rng(0)
>>> monitor = DriftMonitor(["features[0]", "score@v1"], reference_events=1000, window_events=1000,
...                        check_every=100, min_events=100)
>>> for shift in [0.0] * 20 + [1.0] * 10:
...     monitor.update(rng.normal(size=(100, 2)) + [shift, 0], np.arange(100.0))
>>> [(v["name"], v["drifted"]) for v in monitor.report()["values"]]
[('features[0]', True), ('score@v1', False)]
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from streamscore.drift.bins import QuantileBins, index_columns
from streamscore.drift.ks import cdf, ks_critical, ks_of_cdfs, ks_p_value
from streamscore.drift.page_hinkley import ChangePoint, PageHinkley
from streamscore.drift.psi import proportions, psi_of_proportions
from streamscore.drift.wasserstein import wasserstein
from streamscore.drift.window import SlidingCounts

log = logging.getLogger("streamscore.drift")

REFERENCE_EVENTS = 10_000
WINDOW_EVENTS = 10_000
BINS = 20
CHECK_EVERY = 1_000
PSI_THRESHOLD = 0.2
P_THRESHOLD = 0.001
MIN_EVENTS = 1_000
HISTORY = 1_000
CHANGE_DELTA = 0.1  # Page-Hinkley's δ and λ, in reference standard deviations (page_hinkley.py)
CHANGE_THRESHOLD = 100.0
_STATISTICS = ("psi", "ks", "ks_p_value", "wasserstein")


@dataclass(slots=True)
class _Value:
    name: str
    sample: np.ndarray | None  # the reference being collected; None once its bins are fixed
    collected: int = 0
    start: float = math.nan  # the reference's time range
    end: float = math.nan
    bins: QuantileBins | None = None
    mean: float = math.nan  # the reference's, the change detector's baseline
    std: float = math.nan
    drifted: bool = False
    since: float | None = None
    pending: int = -1  # events seen at the first check disagreeing with `drifted`; -1: none
    pending_time: float = math.nan


class _StoredValue(msgspec.Struct):
    name: str
    collected: int
    start: float
    end: float
    sample: bytes | None = None
    edges: bytes | None = None
    representatives: bytes | None = None
    reference: bytes | None = None
    mean: float = math.nan
    std: float = math.nan


class _Config(msgspec.Struct):
    reference_events: int
    window_events: int
    bins: int
    check_every: int
    psi_threshold: float
    p_threshold: float
    min_events: int
    history: int
    change_delta: float
    change_threshold: float


class _Stored(msgspec.Struct):
    config: _Config
    values: list[_StoredValue]
    version: int = 1


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class DriftMonitor:
    def __init__(
        self,
        names: Sequence[str],
        *,
        reference_events: int = REFERENCE_EVENTS,
        window_events: int = WINDOW_EVENTS,
        bins: int = BINS,
        check_every: int = CHECK_EVERY,
        psi_threshold: float = PSI_THRESHOLD,
        p_threshold: float = P_THRESHOLD,
        min_events: int = MIN_EVENTS,
        history: int = HISTORY,
        change_delta: float = CHANGE_DELTA,
        change_threshold: float = CHANGE_THRESHOLD,
    ) -> None:
        if len(set(names)) != len(names):
            raise ValueError("value names must be unique")
        if min(reference_events, window_events, check_every, history) < 1 or min_events < 0:
            raise ValueError("event counts must be positive")
        self._config = _Config(
            reference_events,
            window_events,
            bins,
            check_every,
            psi_threshold,
            p_threshold,
            min_events,
            history,
            change_delta,
            change_threshold,
        )
        self.reference_events = reference_events
        self.bins = bins
        self.check_every = check_every
        self.psi_threshold = psi_threshold
        self.p_threshold = p_threshold
        self.min_events = min_events
        self._min_window = max(1, window_events // 10)
        self._values: list[_Value] = []
        self._window = SlidingCounts(window_events, 0, slots=2 * bins)
        self._changes = PageHinkley(0, delta=change_delta, threshold=change_threshold)
        # Frozen references, padded to the widest binning (2·bins - 1 bins) for vectorised checks:
        # each value's bin proportions (for PSI) and CDF (for KS).
        self._edges = np.full((0, 2 * bins - 2), np.inf)
        self._shares = np.ones((0, 2 * bins - 1))
        self._cdfs = np.zeros((0, 2 * bins - 1))
        self.events = 0
        self._last_time = math.nan
        self._next_check = check_every
        self.alerts: deque[dict[str, Any]] = deque(maxlen=history)
        self.change_points: deque[dict[str, Any]] = deque(maxlen=history)
        self.transitions = {"drifted": 0, "cleared": 0}
        for name in names:
            self.add_value(name)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self._values]

    def add_value(self, name: str) -> None:
        """Monitor one more value: the column appended last to `update`'s arrays."""
        if name in self.names:
            raise ValueError(f"{name} is already monitored")
        self._values.append(_Value(name, np.empty(self.reference_events)))
        self._window.add_column()
        self._changes.add_column()
        self._edges = np.vstack([self._edges, np.full(self._edges.shape[1], np.inf)])
        self._shares = np.vstack([self._shares, np.ones(self._shares.shape[1])])
        self._cdfs = np.vstack([self._cdfs, np.zeros(self._cdfs.shape[1])])

    def remove_value(self, name: str) -> None:
        k = self.names.index(name)
        del self._values[k]
        self._window.remove_column(k)
        self._changes.remove_column(k)
        self._edges = np.delete(self._edges, k, axis=0)
        self._shares = np.delete(self._shares, k, axis=0)
        self._cdfs = np.delete(self._cdfs, k, axis=0)

    def reset_value(self, name: str) -> None:
        """Collect a value's reference afresh from the coming events (a new model version)."""
        k = self.names.index(name)
        self._values[k] = _Value(name, np.empty(self.reference_events))
        self._window.clear_column(k)
        self._changes.stop(k)

    def repin(self, values: np.ndarray, timestamps: np.ndarray) -> None:
        """Make these events ([N, K], in `names` order) every value's reference, from now on."""
        values, timestamps = self._checked(values, timestamps)
        if len(values) == 0:
            raise ValueError("a reference needs at least one event")
        for k, value in enumerate(self._values):
            self._values[k] = _Value(
                value.name,
                None,
                collected=len(values),
                start=float(timestamps.min()),
                end=float(timestamps.max()),
            )
            self._freeze(k, values[:, k], QuantileBins.fit(values[:, k], self.bins))
        log.info("drift reference re-pinned", extra={"drift_reference_events": len(values)})

    def update(self, values: np.ndarray, timestamps: np.ndarray) -> None:
        """Take N events: `values` float [N, K] in `names` order, `timestamps` [N] (seconds)."""
        values, timestamps = self._checked(values, timestamps)
        n = len(values)
        if n == 0:
            return
        taken = {
            k: self._collect(k, values[:, k], timestamps)
            for k, value in enumerate(self._values)
            if value.bins is None
        }
        index = index_columns(values, self._edges)
        for k, rows in taken.items():  # events that went to a reference are no value to the window
            index[:rows, k] = self._window.slots - 1
        self._window.update(index, timestamps)
        for change in self._changes.update(values, timestamps):
            self._record_change(change)
        self.events += n
        self._last_time = float(timestamps[-1])
        if self.events >= self._next_check:
            self._check()
            self._next_check = (self.events // self.check_every + 1) * self.check_every

    def _checked(self, values: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(values, dtype=np.float64)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if values.ndim != 2 or values.shape != (len(timestamps), len(self._values)):
            raise ValueError(f"values must be [N, {len(self._values)}] with N timestamps")
        if not np.isfinite(values).all():
            raise ValueError("values must be finite")
        return values, timestamps

    def _collect(self, k: int, column: np.ndarray, timestamps: np.ndarray) -> int:
        """Add to value k's reference; the number of events it took."""
        value = self._values[k]
        assert value.sample is not None
        take = min(len(column), self.reference_events - value.collected)
        value.sample[value.collected : value.collected + take] = column[:take]
        value.start = float(np.fmin(value.start, timestamps[:take].min()))
        value.end = float(np.fmax(value.end, timestamps[:take].max()))
        value.collected += take
        if value.collected == self.reference_events:
            self._freeze(k, value.sample, QuantileBins.fit(value.sample, self.bins))
        return take

    def _freeze(self, k: int, sample: np.ndarray | None, bins: QuantileBins) -> None:
        value = self._values[k]
        value.sample = None
        value.bins = bins
        if sample is not None:
            value.mean, value.std = float(sample.mean()), float(sample.std())
        self._edges[k] = np.inf
        self._edges[k, : len(bins.edges)] = bins.edges
        padded = np.zeros(self._shares.shape[1], dtype=np.int64)
        padded[: bins.size] = bins.reference
        self._shares[k] = proportions(padded)
        self._cdfs[k] = cdf(padded)
        self._window.clear_column(k)
        self._changes.start(k, value.mean, value.std)

    def _statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every value's current-window size, PSI and KS statistic (meaningless where the size is
        0 or the value has no reference yet)."""
        counts = self._window.counts[:, :-1]
        events = counts.sum(axis=1)
        safe = np.maximum(events, 1)[:, None]
        return (
            events,
            psi_of_proportions(self._shares, proportions(counts)),
            ks_of_cdfs(self._cdfs, np.cumsum(counts, axis=1) / safe),
        )

    def _check(self) -> None:
        events, psis, ks = self._statistics()
        alpha = self.p_threshold / len(self._values)
        for k, value in enumerate(self._values):
            if value.bins is None or events[k] < self._min_window:
                continue
            critical = ks_critical(alpha, value.collected, int(events[k]))
            breach = bool(psis[k] > self.psi_threshold or ks[k] > critical)
            if breach == value.drifted:
                value.pending = -1
                continue
            if value.pending < 0:
                value.pending, value.pending_time = self.events, self._last_time
            if self.events - value.pending >= self.min_events:
                self._transition(k, breach)

    def _transition(self, k: int, drifted: bool) -> None:
        value = self._values[k]
        value.drifted = drifted
        value.since = value.pending_time
        state = "drifted" if drifted else "cleared"
        alert = {
            "name": value.name,
            "state": state,
            "since": _json_float(value.pending_time),
            "since_event": value.pending,
            "time": _json_float(self._last_time),
            "event": self.events,
            **{key: v for key, v in self._describe(k).items() if key in _STATISTICS},
        }
        value.pending = -1
        self.transitions[state] += 1
        self.alerts.append(alert)
        log.warning(
            f"drift {state}: {value.name}", extra={f"drift_{key}": v for key, v in alert.items()}
        )

    def _record_change(self, change: ChangePoint) -> None:
        point = {
            "name": self._values[change.column].name,
            "direction": change.direction,
            "event": change.event,
            "time": _json_float(change.time),
            "detected_event": change.detected_event,
            "detected_time": _json_float(change.detected_time),
            "shift": change.shift,
        }
        self.change_points.append(point)
        log.info(
            f"change point: {point['name']}", extra={f"drift_{k}": v for k, v in point.items()}
        )

    def _describe(self, k: int) -> dict[str, Any]:
        value = self._values[k]
        counts, psis, ks = self._statistics()
        events = int(counts[k]) if value.bins is not None else 0
        start, end = self._window.time_range(events) if events else (math.nan, math.nan)
        described: dict[str, Any] = {
            "name": value.name,
            "psi": None,
            "ks": None,
            "ks_p_value": None,
            "wasserstein": None,
            "drifted": value.drifted,
            "since": None if value.since is None else _json_float(value.since),
            "reference": {
                "events": value.collected,
                "start": _json_float(value.start),
                "end": _json_float(value.end),
            },
            "current": {"events": events, "start": _json_float(start), "end": _json_float(end)},
        }
        if events:
            bins = value.bins
            assert bins is not None
            current = self._window.counts[k, : bins.size]
            described["psi"] = float(psis[k])
            described["ks"] = float(ks[k])
            described["ks_p_value"] = ks_p_value(float(ks[k]), value.collected, events)
            described["wasserstein"] = float(
                wasserstein(bins.reference, current, bins.representatives)
            )
        return described

    def report(self) -> dict[str, Any]:
        """The state for `GET /drift`: JSON-ready (non-finite numbers as None)."""
        return {
            "values": [self._describe(k) for k in range(len(self._values))],
            "alerts": list(self.alerts),
            "change_points": list(self.change_points),
        }

    def to_bytes(self) -> bytes:
        """The configuration and every value's reference (MessagePack)."""
        stored = []
        for v in self._values:
            entry = _StoredValue(v.name, v.collected, v.start, v.end, mean=v.mean, std=v.std)
            if v.bins is None:
                assert v.sample is not None
                entry.sample = v.sample[: v.collected].tobytes()
            else:
                entry.edges = v.bins.edges.tobytes()
                entry.representatives = v.bins.representatives.tobytes()
                entry.reference = v.bins.reference.tobytes()
            stored.append(entry)
        return msgspec.msgpack.encode(_Stored(config=self._config, values=stored))

    def same_config(self, other: DriftMonitor) -> bool:
        """Whether `other` was built with the same thresholds, sizes and bins."""
        return self._config == other._config

    @classmethod
    def from_bytes(cls, data: bytes) -> DriftMonitor:
        stored = msgspec.msgpack.decode(data, type=_Stored)
        monitor = cls([v.name for v in stored.values], **msgspec.structs.asdict(stored.config))
        for k, entry in enumerate(stored.values):
            value = monitor._values[k]
            value.collected, value.start, value.end = entry.collected, entry.start, entry.end
            if entry.sample is not None:
                assert value.sample is not None
                value.sample[: entry.collected] = np.frombuffer(entry.sample)
                continue
            assert entry.edges is not None and entry.representatives is not None
            assert entry.reference is not None
            value.mean, value.std = entry.mean, entry.std
            bins = QuantileBins(
                np.frombuffer(entry.edges).copy(),
                np.frombuffer(entry.representatives).copy(),
                np.frombuffer(entry.reference, dtype=np.int64).copy(),
            )
            monitor._freeze(k, None, bins)
        return monitor
