"""Aggregations as mergeable columns, with no notion of time (Quix's initialize/agg/result split).

A tile keeps, per user, one float per `Column`: a sum, a min or a max, so tiles merge by the
same operation whatever their size. An aggregation names the columns it needs (`columns`),
what one event adds to each (`contribution`), and how to read its value back (`result`);
`count`/`sum`/`mean`/`min`/`max` are all tile columns, shared by every feature that needs them.
`median`, `distinct_count` and `last` are not mergeable from floats and keep per-row detail
(raw values, last-seen time per value, the latest event) in the engine.

>>> cols = columns("mean", "score")
>>> cols
(Column(op=0, quantity='value', source='score', event_types=None), \
Column(op=0, quantity='count', source='event', event_types=None))
>>> result("mean", [np.array([3.0, 0.0]), np.array([2.0, 0.0])]).tolist()
[1.5, nan]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamscore.features.tiles import IDENTITY, MAX, MIN, SUM

TILED = ("count", "sum", "mean", "min", "max")


@dataclass(frozen=True)
class Column:
    op: int  # SUM | MIN | MAX
    quantity: str  # "count": events where the source is present; "value": the source itself
    source: str  # "event", "score", "event_type", "attributes.<name>"
    event_types: tuple[str, ...] | None = None  # only events of these types add to it


def columns(
    aggregation: str, source: str, event_types: tuple[str, ...] | None = None
) -> tuple[Column, ...]:
    # The score is on every event, so counting scores is counting events: one shared column.
    counted = "event" if source in ("event", "score") else source
    if aggregation == "count":
        return (Column(SUM, "count", counted, event_types),)
    if aggregation == "sum":
        return (Column(SUM, "value", source, event_types),)
    if aggregation == "mean":
        return (
            Column(SUM, "value", source, event_types),
            Column(SUM, "count", counted, event_types),
        )
    if aggregation == "min":
        return (Column(MIN, "value", source, event_types),)
    if aggregation == "max":
        return (Column(MAX, "value", source, event_types),)
    raise ValueError(f"{aggregation} is not kept in tile columns")


def contribution(column: Column, values: np.ndarray, matches: np.ndarray | None) -> np.ndarray:
    """What each event adds to `column`: `values` is the source per event (NaN where absent),
    `matches` whether the event passes the column's filter (None: no filter)."""
    present = ~np.isnan(values)
    if matches is not None:
        present &= matches
    if column.quantity == "count":
        return present.astype(np.float64)
    return np.where(present, values, IDENTITY[column.op])


def result(aggregation: str, cols: list[np.ndarray]) -> np.ndarray:
    """Feature values from combined columns; NaN is null (an empty window for mean/min/max)."""
    if aggregation in ("count", "sum"):
        return cols[0]
    if aggregation == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(cols[1] > 0, cols[0] / cols[1], np.nan)
    if aggregation in ("min", "max"):
        return np.where(np.isinf(cols[0]), np.nan, cols[0])
    raise ValueError(f"{aggregation} is not kept in tile columns")
