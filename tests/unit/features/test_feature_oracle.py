"""The feature engine against brute force on randomized out-of-order streams over > 7 days."""

from __future__ import annotations

import numpy as np
from feature_oracle import Event, check, expected
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamscore.features.definitions import default, parse
from streamscore.features.engine import FeatureEngine

DAY = 86400

CUSTOM = """
[[sets]]
version = "v2"
session_gap = "10m"
session_lookback = "3h"

[[sets.features]]
name = "amount"
aggregation = "min"
of = "attributes.amount"
where = { event_type = ["purchase", "click"] }
windows = ["1m", "2h", "8d"]

[[sets.features]]
name = "amount_max"
aggregation = "max"
of = "attributes.amount"
windows = ["10m"]

[[sets.features]]
name = "amount_mean"
aggregation = "mean"
of = "attributes.amount"
windows = ["10m", "2h"]

[[sets.features]]
name = "amounts"
aggregation = "count"
of = "attributes.amount"
windows = ["1h"]

[[sets.features]]
name = "amount_median"
aggregation = "median"
of = "attributes.amount"
where = { event_type = "purchase" }
windows = ["1h", "1d"]

[[sets.features]]
name = "types"
aggregation = "distinct_count"
of = "event_type"
windows = ["10m", "3d"]

[[sets.features]]
name = "last_device"
aggregation = "last"
of = "attributes.device_type"
windows = ["2h"]

[[sets.features]]
name = "last_score"
aggregation = "last"
of = "score"

[[sets.features]]
name = "score_sum"
aggregation = "sum"
of = "score"
windows = ["1m"]

[[sets.features]]
name = "gap"
kind = "seconds_since_previous"

[[sets.features]]
name = "session"
kind = "session_events"

[[sets.features]]
name = "active"
kind = "is_active_session"

[[sets.composites]]
name = "busy"
inputs.session = { weight = 0.5, cap = 4 }
inputs.types_10m = { weight = 0.5, cap = 2 }
"""

values = st.one_of(
    st.floats(-50, 50, allow_nan=False),
    st.integers(-3, 3),
    st.booleans(),
    st.sampled_from(["x", "mobile", "web"]),
)
attributes = st.none() | st.dictionaries(
    st.sampled_from(["amount", "device_type", "other"]), values, max_size=3
)
# Steps and delays hit the session gaps (30m, 10m) exactly, so late events bridge sessions.
gaps = st.sampled_from([300.0, 600.0, 900.0, 1200.0, 1800.0, 2400.0])
steps = st.one_of(
    st.just(0.0),
    st.integers(0, 90).map(float),
    gaps,
    st.integers(0, 4 * 3600).map(float),
    st.integers(0, 3 * DAY).map(float),
    st.floats(0, 30).map(lambda x: round(x, 1)),
)
delays = st.one_of(
    st.just(0.0), gaps, st.integers(0, 600).map(float), st.integers(0, 9 * DAY).map(float)
)
events = st.lists(
    st.tuples(
        st.sampled_from(["a", "a", "b", "c"]),
        steps,
        delays,
        st.sampled_from([None, "view", "purchase", "click"]),
        attributes,
        st.floats(-5, 5, width=32),
    ),
    min_size=1,
    max_size=120,
)


def run(defs, versions, stream, splits, restart_at) -> None:  # type: ignore[no-untyped-def]
    engine = FeatureEngine(defs, versions)
    log: list[Event] = []
    cursor, time, start, batch_no = 0.0, -np.inf, 0, 0
    rows = []
    for user, step, delay, etype, attrs, score in stream:
        cursor += step
        rows.append((user, max(0.0, cursor - delay), etype, attrs, score))
    sizes = [*splits, len(rows)]
    while start < len(rows):
        batch = rows[start : start + sizes[min(batch_no, len(sizes) - 1)]]
        ts = np.array([r[1] for r in batch])
        for i, r in enumerate(batch):
            time = max(time, r[1])
            log.append(Event(r[0], r[1], r[2], r[3], float(np.float32(r[4])), start + i, time))
        engine.update(
            [r[0] for r in batch], ts, [r[2] for r in batch], [r[3] for r in batch],
            np.array([r[4] for r in batch], dtype=np.float32),
        )  # fmt: skip
        start += len(batch)
        batch_no += 1
        if batch_no == restart_at:
            restored = FeatureEngine(defs, versions)
            restored.restore(engine.checkpoint())
            engine = restored
        for version in versions:
            fs = defs[version]
            got = engine.lookup(["a", "b", "c", "nobody"], version)
            for user in ("a", "b", "c", "nobody"):
                check(fs, got[user], expected(fs, user, log, time))
    assert engine.time == time


@settings(max_examples=200, deadline=None)
@given(events, st.lists(st.integers(1, 30), max_size=8), st.integers(1, 6))
def test_default_set_matches_brute_force(stream, splits, restart_at) -> None:  # type: ignore[no-untyped-def]
    run(default(), ["v1"], stream, splits, restart_at)


# A gap of exactly 10 minutes that floating point puts just over: 8192.2 - 7592.2 > 600.
ROUNDED_GAP = [("a", 0.0, 0.0, None, None, 0.0)] * 4 + [
    ("a", step, 0.0, None, None, 0.0) for step in (80.0, 1800.0, 2192.0, 3519.0, 1.2, 600.0)
]


@settings(max_examples=200, deadline=None)
@given(events, st.lists(st.integers(1, 30), max_size=8), st.integers(1, 6))
@example(stream=ROUNDED_GAP, splits=[], restart_at=1)
def test_custom_file_matches_brute_force(stream, splits, restart_at) -> None:  # type: ignore[no-untyped-def]
    text = default().canonical("v1") + CUSTOM
    run(parse(text), ["v1", "v2"], stream, splits, restart_at)
