"""Adaptive vs fixed batch sizes in the scoring stage, under three load shapes, in one run.

    .venv/bin/python -m bench.batching            # ~2 minutes; table + bench/results/batching-DATE.json
    .venv/bin/python -m bench.batching --smoke    # seconds

The real scoring stage (`streamscore.scoring.stage.ScoringStage`, the demo model, one torch
thread) is fed requests on a schedule by a thread of this process; each event's latency is
from its request's arrival to the end of the forward call that scores its last event (the
stage's queueing wait + processing). Cost per event is the service's cost model over every
batch. Fixed policies hold a batch open for at most the latency budget (a longer hold could
only break it). Events still unscored `--drain` seconds after a run ends count with the time
they waited so far, so an overloaded policy's p99 is a lower bound (marked `>`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamscore.events import EventBatch
from streamscore.pipeline.job import Job
from streamscore.scoring.cost import CostModel
from streamscore.scoring.model import create_model, load_model
from streamscore.scoring.policy import AdaptivePolicy, BatchingPolicy, FixedPolicy
from streamscore.scoring.scorer import Scorer
from streamscore.scoring.stage import ScoringStage

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 0.02
MAX_BATCH = 8192
FIXED_SIZES = (1, 64, 1024)


@dataclass(frozen=True)
class Shape:
    name: str
    request_events: int
    # (seconds, events/s) phases, repeated until the run's duration is used up
    phases: tuple[tuple[float, float], ...]


SHAPES = (
    Shape("steady high", 20, ((1.0, 60_000.0),)),
    Shape("bursty", 100, ((0.25, 200_000.0), (0.75, 0.0))),
    Shape("trickle", 1, ((1.0, 200.0),)),
)


def schedule(shape: Shape, seconds: float) -> np.ndarray:
    """Arrival times (s from the start) of each request."""
    times: list[float] = []
    t = 0.0
    while t < seconds:
        for length, rate in shape.phases:
            if rate > 0:
                step = shape.request_events / rate
                times.extend(np.arange(t, min(t + length, seconds), step).tolist())
            t += length
    return np.asarray(times)


def run(
    scorer: Scorer, policy: BatchingPolicy, shape: Shape, seconds: float, drain: float
) -> dict[str, Any]:
    arrivals = schedule(shape, seconds)
    n = shape.request_events
    features = np.random.default_rng(0).random((n, 3))
    template = EventBatch(["bench"] * n, np.zeros(n), features, [None] * n, np.arange(n))
    done_at = np.full(len(arrivals), np.nan)
    arrived_at = np.zeros(len(arrivals))
    number: dict[int, int] = {}  # id(job) -> its request's position in the schedule
    all_done = threading.Event()
    remaining = [len(arrivals)]

    def finished(jobs: list[Job]) -> None:
        now = time.monotonic()
        for job in jobs:
            done_at[number[id(job)]] = now
        remaining[0] -= len(jobs)
        if not remaining[0]:
            all_done.set()

    stage = ScoringStage(
        scorer, policy, MAX_BATCH, on_scored=finished, on_failed=lambda job, exc: None
    )
    stage.start()
    start = time.monotonic()
    for i, at in enumerate(arrivals):
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        arrived_at[i] = time.monotonic()
        job = Job(template, duplicates=0, arrived=arrived_at[i])
        number[id(job)] = i
        stage.submit(job)
    all_done.wait(drain)
    cut = time.monotonic()
    unfinished = int(np.isnan(done_at).sum())
    latency = np.where(np.isnan(done_at), cut, done_at) - arrived_at
    stage.close(drain=False)  # an overloaded run would take minutes to drain
    events = policy.events
    return {
        "policy": policy.mode if policy.mode == "adaptive" else f"fixed {policy.size}",  # type: ignore[attr-defined]
        "shape": shape.name,
        "offered_eps": round(len(arrivals) * shape.request_events / seconds),
        "scored_events": events,
        "unscored_events": unfinished * shape.request_events,
        "batches": policy.batches,
        "mean_batch": round(events / max(policy.batches, 1), 1),
        "cost_per_event": policy.total_cost / max(events, 1),
        "p50_ms": round(float(np.quantile(latency, 0.5)) * 1000, 2),
        "p99_ms": round(float(np.quantile(latency, 0.99)) * 1000, 2),
        "p99_is_lower_bound": unfinished > 0,
    }


def policies(cost: CostModel) -> list[BatchingPolicy]:
    common: dict[str, Any] = {"budget": BUDGET, "max_batch": MAX_BATCH, "cost": cost}
    return [AdaptivePolicy(**common)] + [
        FixedPolicy(size, BUDGET, **common) for size in FIXED_SIZES
    ]


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per shape: adaptive's cost against the cheapest fixed size that met the budget on that
    shape (the comparison the issue asks for) and against the cheapest fixed size overall."""
    out = {}
    for shape in SHAPES:
        here = [r for r in rows if r["shape"] == shape.name]
        adaptive = next(r for r in here if r["policy"] == "adaptive")
        fixed = [r for r in here if r["policy"] != "adaptive"]
        within = [r for r in fixed if _within_budget(r)]
        cheapest = min(fixed, key=lambda r: r["cost_per_event"])
        best_within = min(within, key=lambda r: r["cost_per_event"]) if within else None
        ratio = adaptive["cost_per_event"] / best_within["cost_per_event"] if best_within else None
        out[shape.name] = {
            "adaptive_within_budget": _within_budget(adaptive),
            "fixed_within_budget": [r["policy"] for r in within],
            "cheapest_fixed_within_budget": best_within["policy"] if best_within else None,
            "adaptive_cost_vs_it": None if ratio is None else round(ratio, 3),
            "cheapest_fixed": cheapest["policy"],
            "adaptive_cost_vs_cheapest_fixed": round(
                adaptive["cost_per_event"] / cheapest["cost_per_event"], 3
            ),
            "pass": _within_budget(adaptive) and (ratio is None or ratio <= 1.10),
        }
    return out


def _within_budget(row: dict[str, Any]) -> bool:
    return row["p99_ms"] <= BUDGET * 1000 and not row["p99_is_lower_bound"]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| shape | policy | offered events/s | mean batch | cost / 1M events | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p99 = f"{'>' if r['p99_is_lower_bound'] else ''}{r['p99_ms']:,}"
        lines.append(
            f"| {r['shape']} | {r['policy']} | {r['offered_eps']:,} | {r['mean_batch']:,} | "
            f"${r['cost_per_event'] * 1e6:.4f} | {r['p50_ms']:,} | {p99} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one second per run")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds to finish after a run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.drain = 1.0, 1.0
    model = load_model(create_model(Path(tempfile.mkdtemp()) / "demo_model.pt"))
    scorer = Scorer(model, threads=1)
    for n in (1, 64, 1024, 8192):  # warm up torch's kernels for every size class
        scorer.score(np.zeros((n, model.n_features), np.float32))
    cost = CostModel()
    rows = []
    for shape in SHAPES:
        for batching in policies(cost):
            row = run(scorer, batching, shape, args.seconds, args.drain)
            print(f"[bench.batching] {shape.name:<12} {row['policy']:<10} done", file=sys.stderr)
            rows.append(row)
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report = {
        "date": date,
        "budget_ms": BUDGET * 1000,
        "seconds_per_run": args.seconds,
        "cost_model": dataclasses.asdict(cost),
        "runs": rows,
        "verdicts": verdicts(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "batching-smoke.json" if args.smoke else f"batching-{date[:10]}.json"
    (args.out / name).write_text(json.dumps(report, indent=2))
    print(table(rows))
    print(json.dumps(report["verdicts"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
