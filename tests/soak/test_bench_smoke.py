"""The benchmarks run end to end and report every figure (seconds-long smoke runs).

The main benchmark's smoke runs its PostgreSQL phases too only with STREAMSCORE_LONG=1 (they
double its ~5 minutes); the PostgreSQL paths they drive are tested in tests/service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import LONG

# Run alone (scripts/test): it measures throughput and latency.
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[2]


def smoke(module: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE --smoke`, writing its report into `out`; asserts it succeeded."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_bench_smoke_reports_every_phase(tmp_path: Path) -> None:
    result = smoke("bench.run", tmp_path, *([] if LONG else ["--postgres", ""]))
    report = json.loads((tmp_path / "smoke.json").read_text())
    stores = ("sqlite", "postgresql") if LONG else ("sqlite",)
    assert report["baseline_parse_eps"] > 0 and report["baseline_discard_eps"] > 0
    assert report["throughput"]["json_eps"] > 0 and report["throughput"]["ndjson_eps"] > 0
    assert report["half_rate"]["median"]["n"] > 0
    assert report["half_rate"]["visible_in_history"]["n"] > 0
    assert report["history"]["n"] > 0
    for users in (10_000, 100_000):
        memory = report[f"memory_{users}_users"]
        assert memory["windowed_events"] > 0
        assert memory["medians_equal_after_restart"] is True
    loads = [report["small_requests"]]
    if LONG:
        postgres = report["postgresql"]
        assert postgres["throughput"]["json_eps"] > 0 and not postgres["throughput"]["json_errors"]
        assert postgres["half_rate"]["visible_in_history"]["n"] > 0
        assert "| PostgreSQL: durable ingest" in result.stdout
        loads.append(postgres["small_requests"])
    else:
        assert "postgresql" not in report
    for load in (x for small in loads for x in (small["ten_event"], small["single_event"])):
        assert load["requests_per_second"] > 0 and load["events_per_second"] > 0
    for store in stores:
        assert report["indexing_eps"][store] > 0
        deep = report["deep_history"][store]
        assert deep["n"] > 0 and deep["user_events"] == 20_000 == deep["indexed"]
        assert deep["rows_per_page"] == 10_000
        slope = report["rss_slope"][store]
        assert slope["events_low"] >= 50_000 and slope["events_high"] >= 400_000
        assert slope["events_high"] > slope["events_low"]
    assert "| durable ingest, JSON 500/batch" in result.stdout
    assert "| 1-event requests, 50 connections" in result.stdout
    assert "marginal RSS / live event" in result.stdout


def test_batching_bench_smoke_reports_every_policy_and_shape(tmp_path: Path) -> None:
    result = smoke("bench.batching", tmp_path)
    report = json.loads((tmp_path / "batching-smoke.json").read_text())
    runs = {(r["shape"], r["policy"]) for r in report["runs"]}
    policies = {"adaptive", "fixed 1", "fixed 64", "fixed 1024"}
    assert runs == {(s, p) for s in ("steady high", "bursty", "trickle") for p in policies}
    assert all(r["scored_events"] > 0 and r["cost_per_event"] > 0 for r in report["runs"])
    assert set(report["verdicts"]) == {"steady high", "bursty", "trickle"}
    assert "| trickle | adaptive |" in result.stdout


@pytest.mark.skipif(not LONG, reason="about 3 minutes: STREAMSCORE_LONG=1")
def test_cluster_bench_smoke_reports_scaling_and_takeover() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((ROOT / "bench" / "results" / "cluster-smoke.json").read_text())
    for config in ("one_node", "two_nodes"):
        assert report[config]["acked_per_s"] > 0 and report[config]["stored_per_s"] > 0
    assert report["stored_ratio"] > 0
    assert report["takeover_seconds"] and max(report["takeover_seconds"]) < 15
