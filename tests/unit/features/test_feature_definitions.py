"""Feature files: the default set's names, clear errors for bad files, stable fingerprints."""

from __future__ import annotations

import pytest

from streamscore.features.definitions import DefinitionError, default, load, parse

REQUIRED = [
    "events_5m",
    "events_1h",
    "events_6h",
    "events_24h",
    "events_7d",
    "purchases_1h",
    "purchases_24h",
    "purchases_7d",
    "amount_sum_24h",
    "amount_sum_7d",
    "score_mean_1h",
    "score_max_24h",
    "score_median_5m",
    "distinct_devices_7d",
    "last_event_type",
    "hour_of_day",
    "session_events",
    "is_active_session",
    "engagement_score",
]

BASE = """
[[sets]]
version = "v1"
[[sets.features]]
name = "events"
aggregation = "count"
windows = ["1h"]
"""


def test_default_set_declares_the_required_names() -> None:
    defs = default()
    assert defs.versions == ("v1",)
    assert set(REQUIRED) <= set(defs["v1"].names)
    assert defs["v1"].horizon == 7 * 86400
    purchases = next(a for a in defs["v1"].aggregates if a.name == "purchases")
    assert purchases.event_types == ("purchase",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[sets]", "not valid TOML"),
        ("x = 1", "unknown keys ['x']"),
        ("[[sets]]\nversion = 1", "version must be a string"),
        (BASE.replace('"count"', '"p99"'), "aggregation 'p99' is not one of"),
        (BASE.replace('["1h"]', '["1w"]'), "duration '1w' is not like"),
        (BASE.replace('["1h"]', '["90s"]'), "whole number of minutes"),
        (BASE.replace('["1h"]', '["1h", "60m"]'), "listed twice"),
        (BASE.replace('["1h"]', "[]"), "windows must be a non-empty list"),
        (BASE.replace('"events"', '"Events"'), "must match"),
        (BASE + 'of = "attributes."', "`of` 'attributes.'"),
        (BASE.replace('"count"', '"sum"'), "sum needs `of`"),
        (BASE.replace('"count"', '"mean"') + 'of = "event_type"', "needs a numeric source"),
        (BASE + 'where = { device = "x" }', "supports only event_type"),
        (BASE + "where = { event_type = [] }", "1-64 character strings"),
        (BASE + BASE.replace("[[sets]]\n", "[[sets]]\n", 1), "declared twice"),
        (BASE + '[[sets.features]]\nname = "events_1h"\nkind = "hour_of_day"', "declared twice"),
        (BASE + '[[sets.features]]\nname = "h"\nkind = "weekday"', "kind 'weekday'"),
        (BASE + 'session_gap = "2h"\n', "unknown keys"),  # it belongs to the set, not a feature
        (BASE.replace('version = "v1"', 'version = "v1"\nsession_lookback = "1m"'), "lookback"),
        (BASE + '[[sets.composites]]\nname = "c"\ninputs.nope = { weight = 1, cap = 1 }', "nope"),
        (
            BASE + '[[sets.composites]]\nname = "c"\ninputs.events_1h = { weight = 0.5, cap = 1 }',
            "sum to 1",
        ),
        (
            BASE + '[[sets.composites]]\nname = "c"\ninputs.events_1h = { weight = 1, cap = 0 }',
            "> 0",
        ),
        ("[[sets]]\nversion = 'v3'", "declares no features"),
    ],
)
def test_bad_files_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse(text)


def test_missing_file_is_a_definition_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DefinitionError, match="cannot read"):
        load(tmp_path / "absent.toml")
    (tmp_path / "f.toml").write_text(BASE)
    assert load(tmp_path / "f.toml")["v1"].names == ("events_1h",)


def test_fingerprint_follows_meaning_not_layout() -> None:
    defs = default()
    same = parse("# reordered, commented\n" + defs.canonical("v1"))
    assert same.fingerprint("v1") == defs.fingerprint("v1")
    reordered = parse(
        BASE.replace(
            'aggregation = "count"\nwindows = ["1h"]', 'windows = ["1h"]\naggregation = "count"'
        )
    )
    assert reordered.fingerprint("v1") == parse(BASE).fingerprint("v1")
    changed = [
        BASE.replace('["1h"]', '["2h"]'),
        BASE.replace('aggregation = "count"', 'aggregation = "count"\nwhere.event_type = ["a"]'),
        BASE.replace('version = "v1"', 'version = "v1"\nsession_gap = "20m"'),
    ]
    for text in changed:
        assert parse(text).fingerprint("v1") != parse(BASE).fingerprint("v1")
    both = parse(BASE + BASE.replace('"v1"', '"v2"'))
    assert both.versions == ("v1", "v2")
    assert both.fingerprint("v1") != both.fingerprint("v2")
    with pytest.raises(KeyError, match="unknown feature version 'v9'"):
        both.fingerprint("v9")
