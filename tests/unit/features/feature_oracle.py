"""Brute force for the feature engine: every feature recomputed from the list of accepted events."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamscore.features.definitions import Aggregate, FeatureSet, Window
from streamscore.features.windows import window_start


@dataclass
class Event:
    user: str
    ts: float
    event_type: str | None
    attributes: dict[str, Any] | None
    score: float
    arrival: int  # position in the stream
    reached: float  # stream time once it was in (the largest timestamp so far)


def numeric(v: Any) -> float | None:
    return float(v) if type(v) in (int, float, bool) else None


def category(v: Any) -> Any:
    return v if type(v) is str else (type(v) is bool, float(v))


def source_value(e: Event, source: str, categorical: bool) -> Any:
    if source == "event":
        return 0.0
    if source == "score":
        return category(e.score) if categorical else e.score
    if source == "event_type":
        return e.event_type
    v = (e.attributes or {}).get(source.removeprefix("attributes."))
    if v is None:
        return None
    return category(v) if categorical else numeric(v)


def aggregate(agg: Aggregate, events: list[Event], lo: float, hi: float) -> Any:
    src = agg.source.label
    categorical = agg.aggregation in ("distinct_count", "last") and src != "score"
    chosen = [
        e
        for e in events
        if lo <= e.ts <= hi and (agg.event_types is None or e.event_type in agg.event_types)
    ]
    pairs = [(e, source_value(e, src, categorical)) for e in chosen]
    pairs = [(e, v) for e, v in pairs if v is not None]
    values = [v for _, v in pairs]
    match agg.aggregation:
        case "count":
            return len(values)
        case "sum":
            return math.fsum(values)
        case "mean":
            return math.fsum(values) / len(values) if values else None
        case "min":
            return min(values) if values else None
        case "max":
            return max(values) if values else None
        case "median":
            return float(np.median(values)) if values else None
        case "distinct_count":
            return len(set(values))
        case _:  # last: greatest timestamp, the later arrival on a tie
            if not pairs:
                return None
            e = max(pairs, key=lambda p: (p[0].ts, p[0].arrival))[0]
            if agg.source.kind == "attribute":
                return (e.attributes or {})[agg.source.attribute or ""]
            return e.score if src == "score" else e.event_type


def expected(fs: FeatureSet, user: str, log: list[Event], time: float) -> dict[str, Any]:
    """{name: value or (value, window_start, window_end)} per the documented semantics."""
    mine = [e for e in log if e.user == user]
    out: dict[str, Any] = {}
    horizon_start = window_start(time, fs.horizon)
    for agg in fs.aggregates:
        windows: tuple[Window | None, ...] = agg.windows or (None,)
        for w, name in zip(windows, agg.names, strict=True):
            if w is None:
                out[name] = aggregate(agg, mine, horizon_start, time)
            else:
                lo = window_start(time, w.seconds)
                out[name] = (aggregate(agg, mine, lo, time), lo, time)
    recent = sorted(e.ts for e in mine if e.ts >= horizon_start)
    latest = max((e.ts for e in mine), default=-math.inf)
    active = latest >= time - fs.session_gap
    kept = sorted(e.ts for e in mine if e.ts >= window_start(e.reached, fs.session_lookback))
    run = 0
    if active and kept:
        run = 1
        while run < len(kept) and kept[-run] - kept[-run - 1] <= fs.session_gap:
            run += 1
    for e in fs.event_features:
        out[e.name] = {
            "hour_of_day": int(recent[-1] % 86400 // 3600) if recent else None,
            "seconds_since_previous": recent[-1] - recent[-2] if len(recent) > 1 else None,
            "is_active_session": active,
            "session_events": run,
        }[e.kind]
    for c in fs.composites:
        total = 0.0
        for name, weight, cap in c.inputs:
            v = out[name][0] if isinstance(out[name], tuple) else out[name]
            total += weight * min(1.0, float(v or 0) / cap)
        out[c.name] = 100 * total
    return out


def check(fs: FeatureSet, got: dict[str, dict[str, Any]], want: dict[str, Any]) -> None:
    for name, w in want.items():
        g = got[name]
        if isinstance(w, tuple):
            value, lo, hi = w
            assert (g["window_start"], g["window_end"]) == (lo, hi), name
        else:
            value = w
            assert set(g) == {"value"}, name
        assert same(g["value"], value), (name, g["value"], value)


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float | int) and not isinstance(a, bool) and not isinstance(b, str):
        return math.isclose(a, float(b), rel_tol=1e-9, abs_tol=1e-9)
    return type(a) is type(b) and a == b
