"""Hostile input never gets a 5xx: hypothesis on the decoders, schemathesis on the whole API.

Cases in CI: 6,000 decoder examples + about 4,000 schemathesis requests against a real
server (some 3 minutes of the CI budget: schemathesis generates ~60 ms of CPU per case);
STREAMSCORE_LONG=1 runs 20 and 40 times as many examples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscore.ingest.decode import BodyError, EventDecoder

from ..conftest import LONG, Server

DECODER = EventDecoder(3)
EXAMPLES = 40_000 if LONG else 2_000

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": json_values,
        "timestamp": json_values,
        "features": json_values
        | st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=3, max_size=3),
        "event_id": json_values,
    },
)


def check(batch, rejections, total: int) -> None:  # type: ignore[no-untyped-def]
    assert len(batch) + len(rejections) == total
    indexes = sorted([*batch.index.tolist(), *(r.index for r in rejections)])
    assert indexes == list(range(total))
    assert batch.features.shape == (len(batch), 3)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_json_decoder_only_raises_body_error(body: bytes) -> None:
    try:
        batch, rejections = DECODER.decode_json(body)
    except BodyError:
        return
    check(batch, rejections, len(msgspec.json.decode(body)["events"]))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(event_like | json_values, max_size=20))
def test_event_lists_are_split_into_good_and_rejected(events: list) -> None:
    batch, rejections = DECODER.decode_json(json.dumps({"events": events}).encode())
    check(batch, rejections, len(events))
    assert all(r.error for r in rejections)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.lists(
        st.binary(min_size=1, max_size=80) | event_like.map(lambda e: json.dumps(e).encode()),
        max_size=20,
    )
)
def test_ndjson_lines_never_raise(lines: list[bytes]) -> None:
    lines = [line for line in lines if b"\n" not in line]
    batch, rejections = DECODER.decode_lines([(7 + i, line) for i, line in enumerate(lines)])
    assert sorted([*batch.index.tolist(), *(r.index for r in rejections)]) == list(
        range(7, 7 + len(lines))
    )


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Simulator runs the fuzzer may start are capped to 100 events/s for 1 s."""
    server = Server(
        tmp_path_factory.mktemp("fuzzed"), simulator_max_rps=100, simulator_max_duration=1
    ).start()
    yield server
    server.stop()


def test_schemathesis_against_a_real_server(fuzzed_server: Server, tmp_path: Path) -> None:
    report = tmp_path / "schemathesis.json"
    per_operation = 4000 if LONG else 100  # with the coverage phase, about 4,000 cases in CI
    result = subprocess.run(
        [
            Path(sys.executable).parent / "st",
            "run",
            fuzzed_server.url + "/openapi.json",
            "--max-examples",
            str(per_operation),
            "--checks",
            "all",
            # A cursor we never issued is rightly a 400, which this check would call a failure.
            "--exclude-checks",
            "positive_data_acceptance",
            # Profiling holds the request for up to 60 s by design; tested in test_operations.
            "--exclude-path",
            "/admin/profile",
            # An event stream never ends by design; its snapshots are fuzzed via /snapshot.
            "--exclude-path",
            "/dashboard/stream",
            "--seed",
            "20251122",
            "--workers",
            "2",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout[-6000:]
    cases = json.loads(report.read_text())["test_cases"]
    assert cases["with_failures"] == 0 and cases["errored"] == 0
    assert cases["generated"] >= 3000, cases
    print(f"schemathesis: {cases['generated']} cases, no failures")
