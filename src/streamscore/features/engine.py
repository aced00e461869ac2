"""The feature engine: columnar batches of accepted events in, exact per-user features out.

Every version's features are planned onto shared state: one tile series per (tile size, filter)
holding every tile column any feature needs, raw values per median window, a last-seen time per
distinct value, the latest event per `last` source, the user's two latest timestamps and the
user's sessions. Stream time `T` is the largest timestamp accepted; every windowed value is
exact over the user's events in `[window_start, T]` (see `windows`). Nulls are None in `get`
and NaN in `vector`. Per set, with H its longest window (its horizon) and `gap` its session gap:

- `last` without windows: the latest event (by timestamp; the later arrival on a tie) with the
  source present, if it lies within H; `hour_of_day` (UTC) of the user's latest event within H;
  `seconds_since_previous` between the two latest within H (0 for equal timestamps);
- `is_active_session`: the latest event is at most `gap` before T; `session_events`: while
  active, the events of the run ending at the latest event whose consecutive gaps are all
  <= `gap` (late events join or bridge runs); 0 when not active. An event more than
  `session_lookback` behind the stream time reached with it (in arrival order) joins no run.
- Users are never forgotten (their slot stays, ~100 bytes with no rows); empty windows give
  count/sum/distinct 0 and mean/min/max/median/last null.

>>> from streamscore.features.definitions import default
>>> engine = FeatureEngine(default())
>>> engine.update(["ann", "ann"], np.array([3600.0, 3700.0]), ["view", "purchase"],
...               [{"device_type": "mobile"}, {"amount": 9.5, "device_type": "web"}],
...               np.array([0.2, 0.4]))
>>> f = engine.get("ann", "v1", ["events_5m", "purchases_1h", "distinct_devices_7d"])
>>> f["events_5m"], f["purchases_1h"]["value"], f["distinct_devices_7d"]["value"]
({'value': 2, 'window_start': 3400.0, 'window_end': 3700.0}, 1, 2)
>>> engine.get("ann", "v1", ["last_event_type", "session_events", "score_median_5m"])
{'last_event_type': {'value': 'purchase'}, 'session_events': {'value': 2}, \
'score_median_5m': {'value': 0.30000000000000004, 'window_start': 3400.0, 'window_end': 3700.0}}
>>> engine.vector(["ann", "bob"], "v1", ["events_1h", "is_active_session", "score_mean_1h"])
array([[2. , 1. , 0.3],
       [0. , 0. , nan]], dtype=float32)
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from streamscore.features import aggregations
from streamscore.features.aggregations import Column
from streamscore.features.definitions import Aggregate, FeatureDefinitions, Window
from streamscore.features.tiles import MAX, Runs
from streamscore.features.windows import TILES_PER_WINDOW, first_tile, tile_index
from streamscore.handoff import HandoffLock

Attributes = dict[str, float | str | bool] | None
INTEGER = ("count", "distinct_count")


@njit(cache=True, nogil=True)
def _latest(last_ts, last_val, slots, ts, values):  # type: ignore[no-untyped-def]
    """Keep each user's latest (timestamp, value); a later arrival wins a tie."""
    for i in range(slots.shape[0]):
        u = slots[i]
        if ts[i] >= last_ts[u]:
            last_ts[u] = ts[i]
            last_val[u] = values[i]


@njit(cache=True, nogil=True)
def _top_two(first, second, slots, ts):  # type: ignore[no-untyped-def]
    for i in range(slots.shape[0]):
        u = slots[i]
        if ts[i] >= first[u]:
            second[u] = first[u]
            first[u] = ts[i]
        elif ts[i] > second[u]:
            second[u] = ts[i]


class Interner:
    """Strings (and attribute values used as categories) to dense float codes, and back."""

    def __init__(self, values: Sequence[Any] = ()) -> None:
        self.values: list[Any] = list(values)
        self.codes: dict[Any, float] = {None: np.nan}
        self.codes.update({self._key(v): float(i) for i, v in enumerate(self.values)})

    @staticmethod
    def _key(v: Any) -> Any:
        # Numbers are keyed apart from strings and booleans (True == 1 == 1.0 in a dict).
        return v if type(v) is str else (type(v) is bool, float(v))

    def encode(self, raw: list[Any]) -> np.ndarray:
        """Codes (NaN for None); only values never seen or not strings take the slow path."""
        codes = list(map(self.codes.get, raw))
        if None in codes:
            for i, v in enumerate(raw):
                if codes[i] is None:
                    key = self._key(v)
                    if key not in self.codes:
                        self.codes[key] = float(len(self.values))
                        self.values.append(v)
                    codes[i] = self.codes[key]
        return np.fromiter(codes, dtype=np.float64, count=len(codes))


@dataclass
class _Series:
    """Tile columns for one tile size, shared by every feature that reads them: one row (and one
    random memory access per event) serves counts, sums, extremes and their filtered variants."""

    tile: float
    window: float  # the longest window read from it: older tiles are dropped
    columns: list[Column] = field(default_factory=list)
    runs: Runs = field(default_factory=lambda: Runs(1))


def _numbers(raw: list[Any]) -> np.ndarray:
    """Numbers and booleans as floats; absent values and strings as NaN."""
    try:
        return np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array(
            [v if type(v) in (int, float, bool) else None for v in raw], dtype=np.float64
        )


class FeatureEngine:
    """Computes the given versions (all by default) of a feature file, exactly, in memory."""

    def __init__(self, definitions: FeatureDefinitions, versions: Iterable[str] | None = None):
        self.definitions = definitions
        self.versions = tuple(versions) if versions is not None else definitions.versions
        self.sets = {v: definitions[v] for v in self.versions}
        self.time = -np.inf
        self.events = 0
        # One writer (ingest) and many readers (HTTP) share the arrays: public calls take it;
        # HTTP reads are `submit`ted to it, so the event loop never blocks on an update.
        self.lock = HandoffLock()
        self._slot_of: dict[str, int] = {}
        self._interners: dict[str, Interner] = {}
        self._series: dict[float, _Series] = {}
        self._medians: dict[tuple[float, tuple[str, ...] | None, str], Runs] = {}
        self._distinct: dict[tuple[tuple[str, ...] | None, str], tuple[float, Runs]] = {}
        self._last: dict[tuple[tuple[str, ...] | None, str], tuple[np.ndarray, np.ndarray]] = {}
        self._sessions: dict[tuple[float, float], Runs] = {}
        self._first = np.full(0, -np.inf)
        self._second = np.full(0, -np.inf)
        self._swept: dict[int, float] = {}
        self._dirty = np.zeros(0, dtype=bool)  # slots updated since the last snapshot
        for fs in self.sets.values():
            self._sessions.setdefault((fs.session_gap, fs.session_lookback), Runs(2))
            for agg in fs.aggregates:
                self._plan(agg)
        for s in self._series.values():
            s.runs = Runs(len(s.columns))
        self._ops = {
            k: np.array([c.op for c in s.columns], np.int8) for k, s in self._series.items()
        }

    @classmethod
    def backfill(
        cls,
        definitions: FeatureDefinitions,
        versions: Iterable[str],
        batches: Iterable[
            tuple[list[str], np.ndarray, list[str | None], list[Attributes], np.ndarray]
        ],
    ) -> FeatureEngine:
        """A fresh engine for `versions` fed stored history in log order: equal to streaming."""
        engine = cls(definitions, versions)
        for batch in batches:
            engine.update(*batch)
        return engine

    def _plan(self, agg: Aggregate) -> None:
        source = agg.source.label
        if agg.aggregation in aggregations.TILED:
            for w in agg.windows:
                s = self._series.setdefault(w.tile, _Series(w.tile, w.seconds))
                s.window = max(s.window, w.seconds)
                for col in aggregations.columns(agg.aggregation, source, agg.event_types):
                    if col not in s.columns:
                        s.columns.append(col)
        elif agg.aggregation == "median":
            for w in agg.windows:
                self._medians.setdefault((w.seconds, agg.event_types, source), Runs(1))
        elif agg.aggregation == "distinct_count":
            key = (agg.event_types, source)
            longest = max(w.seconds for w in agg.windows)
            old = self._distinct.get(key, (0.0, Runs(1)))
            self._distinct[key] = (max(old[0], longest), old[1])
        else:
            self._last.setdefault(
                (agg.event_types, source), (np.full(0, -np.inf), np.full(0, np.nan))
            )

    # ---------------------------------------------------------------- ingest

    def update(
        self,
        user_ids: list[str],
        timestamps: np.ndarray,
        event_types: list[str | None],
        attributes: list[Attributes],
        scores: np.ndarray,
    ) -> None:
        """Add a batch of accepted (deduplicated) events; stream time moves to the batch max.

        Timestamps (seconds) and scores must be finite: every event has a score.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if not (np.isfinite(scores).all() and np.isfinite(timestamps).all()):
            raise ValueError("timestamps and scores must be finite")
        with self.lock:
            self._update(user_ids, timestamps, _Sources(self, event_types, attributes, scores))

    def advance(self, time: float) -> None:
        """Move stream time to `time` without an event: a cluster partition follows the
        cluster's stream time, which other partitions' events move (reads bound every window
        by it; rows it leaves behind are swept by the next update)."""
        with self.lock:
            self.time = max(self.time, float(time))

    def _update(self, user_ids: list[str], timestamps: np.ndarray, sources: _Sources) -> None:
        n = len(user_ids)
        if n == 0:
            return
        ts = np.ascontiguousarray(timestamps, dtype=np.float64)
        before = self.time
        self.time = max(self.time, float(ts.max()))
        self.events += n
        slots = self._slots(user_ids)
        self._dirty[slots] = True
        masks: dict[tuple[str, ...] | None, np.ndarray | None] = {None: None}

        def mask_of(types: tuple[str, ...] | None) -> np.ndarray | None:
            if types not in masks:
                codes = self._interner("event_type").encode(list(types or ()))
                masks[types] = np.isin(sources.get("event_type", categorical=True), codes)
            return masks[types]

        for tile, s in self._series.items():
            keys = tile_index(ts, tile).astype(np.float64)
            values = np.stack(
                [
                    aggregations.contribution(c, sources.get(c.source), mask_of(c.event_types))
                    for c in s.columns
                ],
                axis=1,
            )
            # Events no column takes (all filtered out) would only add empty rows.
            filters = [mask_of(c.event_types) for c in s.columns]
            sel: Any = (
                slice(None) if any(f is None for f in filters) else np.logical_or.reduce(filters)
            )
            lowest = first_tile(self.time, s.window, tile)
            s.runs.insert(slots[sel], keys[sel], values[sel], self._ops[tile], True, lowest)
            self._sweep(s.runs, lowest)
        for (window, types, source), runs in self._medians.items():
            values = sources.get(source)
            keep = (
                ~np.isnan(values) if mask_of(types) is None else ~np.isnan(values) & mask_of(types)
            )
            lowest = _window_start(self.time, window)
            runs.insert(slots[keep], ts[keep], values[keep, None], _NO_OPS, False, lowest)
            self._sweep(runs, lowest)
        for (types, source), (window, runs) in self._distinct.items():
            codes = sources.get(source, categorical=True)
            lowest = _window_start(self.time, window)
            keep = ~np.isnan(codes) & (ts >= lowest)
            if mask_of(types) is not None:
                keep &= mask_of(types)
            runs.insert(slots[keep], codes[keep], ts[keep, None], _MAX_OPS, True)
            self._sweep(runs, lowest, column=0, ordered=False)
        for (types, source), (last_ts, last_val) in self._last.items():
            values = sources.get(source, categorical=source != "score")
            keep = (
                ~np.isnan(values) if mask_of(types) is None else ~np.isnan(values) & mask_of(types)
            )
            _latest(last_ts, last_val, slots[keep], ts[keep], values[keep])
        _top_two(self._first, self._second, slots, ts)
        # An event joins sessions unless it is older than the lookback behind the stream time
        # reached with it (arrival order, not batch boundaries: a backfill batches differently).
        reached = np.maximum.accumulate(np.maximum(ts, before))
        for (gap, lookback), runs in self._sessions.items():
            tile = lookback / TILES_PER_WINDOW
            keep = ts >= tile_index(reached - lookback, tile) * tile
            runs.insert_sessions(slots[keep], ts[keep], gap)
            self._sweep(runs, _window_start(self.time, lookback) - gap, column=0)

    def _sweep(self, runs: Runs, lowest: float, column: int = -1, ordered: bool = True) -> None:
        """Drop rows no window can read any more, each time the oldest kept tile moves."""
        if self._swept.get(id(runs), -np.inf) < lowest:
            self._swept[id(runs)] = lowest
            runs.drop_below(lowest, column, ordered)

    def _slots(self, user_ids: list[str]) -> np.ndarray:
        slot_of = self._slot_of
        slots = list(map(slot_of.get, user_ids))
        if None in slots:
            for i, u in enumerate(user_ids):
                if slots[i] is None:
                    slots[i] = slot_of.setdefault(u, len(slot_of))
            self._ensure(len(slot_of))
        return np.fromiter(slots, dtype=np.int64, count=len(slots))

    def _ensure(self, users: int) -> None:
        if users <= len(self._first):
            return
        size = max(1024, 2 * users)
        grow = size - len(self._first)
        self._first = np.concatenate([self._first, np.full(grow, -np.inf)])
        self._second = np.concatenate([self._second, np.full(grow, -np.inf)])
        self._dirty = np.concatenate([self._dirty, np.zeros(grow, dtype=bool)])
        for key, (last_ts, last_val) in self._last.items():
            self._last[key] = (
                np.concatenate([last_ts, np.full(grow, -np.inf)]),
                np.concatenate([last_val, np.full(grow, np.nan)]),
            )
        for runs in self._all_runs():
            runs.ensure_slots(size)

    def _all_runs(self) -> list[Runs]:
        return [
            *(s.runs for s in self._series.values()),
            *self._medians.values(),
            *(r for _, r in self._distinct.values()),
            *self._sessions.values(),
        ]

    def _interner(self, source: str) -> Interner:
        return self._interners.setdefault(source, Interner())

    # ---------------------------------------------------------------- reads

    def user_list(self) -> list[str]:
        """Every user the engine holds state for."""
        with self.lock:
            return list(self._slot_of)

    def names(self, version: str) -> tuple[str, ...]:
        return self._set(version).names

    def get(
        self, user_id: str, version: str, names: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """`{name: {"value", "window_start", "window_end"}}`; no window bounds if not windowed."""
        return self.lookup([user_id], version, names)[user_id]

    def lookup(
        self, user_ids: Sequence[str], version: str, names: Sequence[str] | None = None
    ) -> dict[str, dict[str, dict[str, Any]]]:
        table = self.table(user_ids, version, names)
        out: dict[str, dict[str, dict[str, Any]]] = {user: {} for user in user_ids}
        for name, column in table.columns.items():
            bound = table.bounds.get(name)
            for user, value in zip(user_ids, column, strict=True):
                if bound is None:
                    out[user][name] = {"value": value}
                else:
                    out[user][name] = {
                        "value": value,
                        "window_start": bound[0],
                        "window_end": bound[1],
                    }
        return out

    def table(
        self, user_ids: Sequence[str], version: str, names: Sequence[str] | None = None
    ) -> Table:
        """`lookup` as columns: what a serving path encodes without a dict per value."""
        return self.submit_table(user_ids, version, names).result()

    def submit_table(
        self, user_ids: Sequence[str], version: str, names: Sequence[str] | None = None
    ) -> Future[Table]:
        """`table`, run under the lock as soon as an update slice lets go of it (see
        `HandoffLock`): the event loop awaits it instead of blocking."""
        names = self._names(version, names)

        def read() -> Table:
            values, kinds, bounds = self._compute(user_ids, version, names)
            columns = {name: self._python(values[name], kinds[name]) for name in names}
            return Table(columns, {n: bounds[n] for n in names if n in bounds}, self.time)

        return self.lock.submit(read)

    def vector(self, user_ids: Sequence[str], version: str, names: Sequence[str]) -> np.ndarray:
        """Model input, one row per user in `names` order: booleans 0/1, null NaN, no strings."""
        names = self._names(version, names)
        with self.lock:
            values, kinds, _ = self._compute(user_ids, version, names)
        text = [n for n in names if kinds[n].startswith("code:")]
        if text:
            raise ValueError(f"features {text} are categorical: not model inputs")
        out = np.empty((len(user_ids), len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            out[:, j] = values[name]
        return out

    def preview(
        self,
        user_ids: list[str],
        timestamps: np.ndarray,
        event_types: list[str | None],
        attributes: list[Attributes],
        version: str,
        names: Sequence[str],
    ) -> np.ndarray:
        """`vector` rows for a batch of events not applied yet: each row is read at the stream
        time the batch brings, over the user's events up to the event itself (the user's later
        events of the batch excluded). The event counts, but not its score (unknown before it
        is scored): score features hold the user's earlier scores. The engine is left
        unchanged: a copy of just these users' state takes the events."""
        names = self._names(version, names)
        n = len(user_ids)
        index: dict[str, int] = {}
        codes = np.fromiter(
            (index.setdefault(u, len(index)) for u in user_ids), dtype=np.int64, count=n
        )
        order = np.argsort(codes, kind="stable")
        ranked = codes[order]
        first = np.flatnonzero(np.concatenate(([True], ranked[1:] != ranked[:-1])))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - np.repeat(first, np.diff(np.append(first, n)))
        ts = np.ascontiguousarray(timestamps, dtype=np.float64)
        out = np.empty((n, len(names)), dtype=np.float32)
        with self.lock:
            sub = self._subset(list(index))
            sub.time = max(sub.time, float(ts.max(initial=-np.inf)))
            for r in range(int(rank.max(initial=-1)) + 1):
                pick = np.flatnonzero(rank == r).tolist()
                users = [user_ids[i] for i in pick]
                types = [event_types[i] for i in pick]
                attrs = [attributes[i] for i in pick]
                unscored = np.full(len(pick), np.nan)
                sub._update(users, ts[pick], _Sources(sub, types, attrs, unscored))
                values, kinds, _ = sub._compute(users, version, names)
                text = [name for name in names if kinds[name].startswith("code:")]
                if text:
                    raise ValueError(f"features {text} are categorical: not model inputs")
                for j, name in enumerate(names):
                    out[pick, j] = values[name]
        return out

    def _subset(self, user_ids: list[str]) -> FeatureEngine:
        """A copy of this engine's state for `user_ids` only (interners shared: codes only grow)."""
        sub = FeatureEngine(self.definitions, self.versions)
        slots = np.array([self._slot_of.get(u, -1) for u in user_ids], dtype=np.int64)
        known = slots >= 0
        safe = np.maximum(slots, 0)

        def take(array: np.ndarray, empty: float) -> np.ndarray:
            return np.where(known, array[safe] if len(array) else empty, empty)

        sub.time, sub.events = self.time, self.events
        sub._slot_of = {u: i for i, u in enumerate(user_ids)}
        sub._interners = self._interners
        sub._first, sub._second = take(self._first, -np.inf), take(self._second, -np.inf)
        sub._dirty = np.zeros(len(user_ids), dtype=bool)
        for key, (last_ts, last_val) in self._last.items():
            sub._last[key] = (take(last_ts, -np.inf), take(last_val, np.nan))
        for key, s in self._series.items():
            sub._series[key].runs = s.runs.take(slots)
        for key, runs in self._medians.items():
            sub._medians[key] = runs.take(slots)
        for key, (window, runs) in self._distinct.items():
            sub._distinct[key] = (window, runs.take(slots))
        for key, runs in self._sessions.items():
            sub._sessions[key] = runs.take(slots)
        return sub

    def _names(self, version: str, names: Sequence[str] | None) -> list[str]:
        declared = self._set(version).names
        if names is None:
            return list(declared)
        unknown = [n for n in names if n not in declared]
        if unknown:
            raise KeyError(f"unknown features {unknown} in version {version!r}")
        return list(names)

    def _set(self, version: str) -> Any:
        if version not in self.sets:
            raise KeyError(f"version {version!r} is not computed here; have {list(self.sets)}")
        return self.sets[version]

    def _compute(
        self, user_ids: Sequence[str], version: str, names: list[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, tuple[float | None, float | None]]]:
        fs = self._set(version)
        slots = np.array([self._slot_of.get(u, -1) for u in user_ids], dtype=np.int64)
        T = self.time
        wanted = set(names)
        for c in fs.composites:
            if c.name in wanted:
                wanted.update(name for name, _, _ in c.inputs)
        values: dict[str, np.ndarray] = {}
        kinds: dict[str, str] = {}
        bounds: dict[str, tuple[float | None, float | None]] = {}
        cache: dict[Any, np.ndarray] = {}
        for agg in fs.aggregates:
            windows: tuple[Window | None, ...] = agg.windows or (None,)
            for w, name in zip(windows, agg.names, strict=True):
                if name not in wanted:
                    continue
                values[name], kinds[name] = self._aggregate(agg, w, fs.horizon, slots, cache)
                if w is not None:
                    known = np.isfinite(T)
                    bounds[name] = (_window_start(T, w.seconds), T) if known else (None, None)
        safe = np.maximum(slots, 0)
        known = slots >= 0
        first = np.where(known, self._first[safe] if len(self._first) else -np.inf, -np.inf)
        second = np.where(known, self._second[safe] if len(self._second) else -np.inf, -np.inf)
        horizon_start = _window_start(T, fs.horizon)
        active = first >= T - fs.session_gap
        for e in fs.event_features:
            if e.name not in wanted:
                continue
            if e.kind == "hour_of_day":
                with np.errstate(invalid="ignore"):
                    hour = np.floor(np.mod(first, 86400.0) / 3600.0)
                values[e.name], kinds[e.name] = (
                    np.where(first >= horizon_start, hour, np.nan),
                    "int",
                )
            elif e.kind == "seconds_since_previous":
                with np.errstate(invalid="ignore"):
                    gap = np.where(second >= horizon_start, first - second, np.nan)
                values[e.name], kinds[e.name] = gap, "float"
            elif e.kind == "is_active_session":
                values[e.name], kinds[e.name] = active.astype(np.float64), "bool"
            else:
                runs = self._sessions[(fs.session_gap, fs.session_lookback)]
                has, last = runs.last_row(slots)
                count = np.where(has & active, last[:, 1] if last.shape[1] else 0.0, 0.0)
                values[e.name], kinds[e.name] = count, "int"
        for c in fs.composites:
            if c.name not in wanted:
                continue
            total = np.zeros(len(slots))
            for name, weight, cap in c.inputs:
                total += weight * np.minimum(1.0, np.nan_to_num(values[name], nan=0.0) / cap)
            values[c.name], kinds[c.name] = 100.0 * total, "float"
        return values, kinds, bounds

    def _aggregate(
        self, agg: Aggregate, w: Window | None, horizon: float, slots: np.ndarray, cache: dict
    ) -> tuple[np.ndarray, str]:
        T = self.time
        source = agg.source.label
        if agg.aggregation in aggregations.TILED:
            assert w is not None
            key = w.tile
            if (key, w.seconds) not in cache:
                s = self._series[key]
                lowest = first_tile(T, w.seconds, w.tile) if np.isfinite(T) else np.inf
                cache[(key, w.seconds)] = s.runs.aggregate(slots, lowest, self._ops[key])
            combined = cache[(key, w.seconds)]
            s = self._series[key]
            needed = aggregations.columns(agg.aggregation, source, agg.event_types)
            cols = [combined[:, s.columns.index(c)] for c in needed]
            kind = "int" if agg.aggregation in INTEGER else "float"
            return aggregations.result(agg.aggregation, cols), kind
        if agg.aggregation == "median":
            assert w is not None
            runs = self._medians[(w.seconds, agg.event_types, source)]
            return runs.medians(slots, _window_start(T, w.seconds)), "float"
        if agg.aggregation == "distinct_count":
            assert w is not None
            _, runs = self._distinct[(agg.event_types, source)]
            return runs.count_at_least(slots, _window_start(T, w.seconds)), "int"
        last_ts, last_val = self._last[(agg.event_types, source)]
        bound = _window_start(T, w.seconds if w is not None else horizon)
        safe = np.maximum(slots, 0)
        has = (
            (slots >= 0) & (last_ts[safe] >= bound) if len(last_ts) else np.zeros(len(slots), bool)
        )
        value = np.where(has, last_val[safe] if len(last_val) else np.nan, np.nan)
        return value, ("float" if source == "score" else f"code:{source}")

    def _python(self, values: np.ndarray, kind: str) -> list[Any]:
        """A column as JSON-ready Python values (None for null), converted in bulk."""
        if kind.startswith("code:"):
            decode = self._interner(kind[5:]).values
            return [None if v != v else decode[int(v)] for v in values.tolist()]
        if kind == "int":
            return [None if v != v else int(v) for v in values.tolist()]
        if kind == "bool":
            return (values > 0).tolist()
        return [None if v != v else v for v in values.tolist()]

    # ---------------------------------------------------------------- state

    @property
    def users(self) -> int:
        return len(self._slot_of)

    def memory_bytes(self) -> int:
        """Arrays of every series and per-user state, plus the user-id table."""
        with self.lock:
            return self._memory_bytes()

    def _memory_bytes(self) -> int:
        arrays = sum(r.memory_bytes() for r in self._all_runs())
        arrays += self._first.nbytes + self._second.nbytes
        arrays += sum(a.nbytes + b.nbytes for a, b in self._last.values())
        ids = sys.getsizeof(self._slot_of) + sum(sys.getsizeof(u) for u in self._slot_of)
        return int(arrays + ids)

    def compact(self) -> None:
        """Drop all slack in the arenas (memory measurements, before a checkpoint)."""
        with self.lock:
            self._compact()

    def _compact(self) -> None:
        for runs in self._all_runs():
            runs.compact()

    def checkpoint(self) -> bytes:
        """The whole state as bytes; `restore` on an engine of the same definitions resumes it."""
        return encode_checkpoint(self.snapshot())

    def snapshot(self, delta: bool = False) -> Snapshot:
        """A copy of the state for `encode_checkpoint`: the whole state, or (`delta`) only the
        users updated since the last snapshot, which `apply_delta` lays over the state saved
        before. Only the copy (a memcpy of the arrays) holds the lock; encoding, the slow
        part, runs after, so a checkpoint stalls readers and updates for milliseconds."""
        with self.lock:
            if delta:
                ids = list(self._slot_of)
                changed = [ids[i] for i in np.flatnonzero(self._dirty[: len(ids)]).tolist()]
                source = self._subset(changed)
            else:
                source = self
            self._dirty[:] = False
            header = {
                "fingerprints": {v: self.definitions.fingerprint(v) for v in self.versions},
                "time": self.time,
                "events": self.events,
                "users": list(source._slot_of),
                "interners": {k: list(i.values) for k, i in self._interners.items()},
                "swept": [self._swept.get(id(r), -np.inf) for r in self._all_runs()],
                "delta": delta,
            }
            arrays: dict[str, np.ndarray] = {
                "first": source._first.copy(),
                "second": source._second.copy(),
            }
            for i, (last_ts, last_val) in enumerate(source._last.values()):
                arrays[f"last{i}_ts"], arrays[f"last{i}_val"] = last_ts.copy(), last_val.copy()
            runs = [r.copy() for r in source._all_runs()]
        return Snapshot(header, arrays, runs)

    def restore(self, data: bytes) -> None:
        """Replace the state by a whole checkpoint's; refused if it holds other version
        definitions (or is a delta)."""
        with self.lock:
            if self._restore(data):
                raise ValueError("a delta checkpoint: restore its base, then apply_delta")

    def apply_delta(self, data: bytes) -> None:
        """Lay a delta checkpoint over this state: its users' state replaces theirs."""
        with self.lock:
            delta = FeatureEngine(self.definitions, self.versions)
            if not delta._restore(data):
                raise ValueError("not a delta checkpoint")
            users = list(delta._slot_of)
            slots = self._slots(users)
            n = len(users)
            self._first[slots], self._second[slots] = delta._first[:n], delta._second[:n]
            for key, (last_ts, last_val) in self._last.items():
                last_ts[slots], last_val[slots] = delta._last[key][0][:n], delta._last[key][1][:n]
            for mine, theirs in zip(self._all_runs(), delta._all_runs(), strict=True):
                mine.replace(slots, theirs)
                self._swept[id(mine)] = max(
                    self._swept.get(id(mine), -np.inf), delta._swept[id(theirs)]
                )
            self.time, self.events = delta.time, delta.events
            self._interners = delta._interners

    def _restore(self, data: bytes) -> bool:
        """Load a checkpoint's state; returns whether it was a delta."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes())
            mine = {v: self.definitions.fingerprint(v) for v in self.versions}
            if header["fingerprints"] != mine:
                raise ValueError(
                    f"checkpoint holds versions {header['fingerprints']}, this engine {mine}"
                )
            self.time, self.events = float(header["time"]), int(header["events"])
            self._slot_of = {u: i for i, u in enumerate(header["users"])}
            self._interners = {k: Interner(v) for k, v in header["interners"].items()}
            self._first, self._second = z["first"].copy(), z["second"].copy()
            for i, key in enumerate(self._last):
                self._last[key] = (z[f"last{i}_ts"].copy(), z[f"last{i}_val"].copy())
            runs = [
                Runs.from_state({n: z[f"runs{i}_{n}"] for n in ("rows", "segments")})
                for i in range(len(self._all_runs()))
            ]
        it = iter(runs)
        for s in self._series.values():
            s.runs = next(it)
        for key in self._medians:
            self._medians[key] = next(it)
        for key, (window, _) in self._distinct.items():
            self._distinct[key] = (window, next(it))
        for key in self._sessions:
            self._sessions[key] = next(it)
        self._swept = {id(r): s for r, s in zip(self._all_runs(), header["swept"], strict=True)}
        self._dirty = np.zeros(len(self._first), dtype=bool)
        return bool(header.get("delta", False))


_NO_OPS = np.zeros(1, dtype=np.int8)
_MAX_OPS = np.array([MAX], dtype=np.int8)


@dataclass(frozen=True)
class Table:
    """Feature values for a list of users: one JSON-ready column per name, in the asked order.

    `bounds` holds `(window_start, window_end)` for the windowed names only (the same for every
    user: windows end at the stream time `time`)."""

    columns: dict[str, list[Any]]
    bounds: dict[str, tuple[float | None, float | None]]
    time: float


@dataclass(frozen=True)
class Snapshot:
    """A copy of an engine's state (`FeatureEngine.snapshot`), owned by no one else."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    runs: list[Runs]  # copies, compacted when encoded


def encode_checkpoint(snapshot: Snapshot) -> bytes:
    """A snapshot as checkpoint bytes (`FeatureEngine.restore` reads them); no lock needed."""
    arrays = dict(snapshot.arrays)
    for i, runs in enumerate(snapshot.runs):
        for name, array in runs.state().items():
            arrays[f"runs{i}_{name}"] = array
    header = np.frombuffer(json.dumps(snapshot.header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, header=header, **arrays)
    return buffer.getvalue()


def _window_start(time: float, window: float) -> float:
    tile = window / TILES_PER_WINDOW
    return first_tile(time, window, tile) * tile if np.isfinite(time) else -np.inf


class _Sources:
    """Per-batch columns of what aggregations read, each extracted once, NaN where absent."""

    def __init__(
        self,
        engine: FeatureEngine,
        event_types: list[str | None],
        attributes: list[Attributes],
        scores: np.ndarray,
    ) -> None:
        self.engine = engine
        self.event_types = event_types
        self.attributes = attributes
        self.scores = scores
        self.columns: dict[tuple[str, bool], np.ndarray] = {}

    def get(self, source: str, categorical: bool = False) -> np.ndarray:
        """Numbers (NaN where absent or not numeric), or category codes from the interner."""
        key = (source, categorical)
        column = self.columns.get(key)
        if column is None:
            column = self.columns[key] = self._extract(source, categorical)
        return column

    def _extract(self, source: str, categorical: bool) -> np.ndarray:
        if source == "event":
            return np.zeros(len(self.event_types))
        if source == "event_type":
            raw: list[Any] = self.event_types
        elif source == "score":
            raw = self.scores.tolist()
        else:
            name = source.removeprefix("attributes.")
            raw = [a.get(name) if a else None for a in self.attributes]
        if categorical:
            return self.engine._interner(source).encode(raw)
        return self.scores if source == "score" else _numbers(raw)
