"""`streamscore generate`: drive a running service with synthetic events and report.

Each of `--procs` processes runs its own event loop with `--concurrency` keep-alive
connections and a share of `--rps`; the parent adds up their reports every half second, shows
them live, and prints a summary (or one JSON line with `--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import queue
import time
import uuid
from typing import Any

import msgspec

from streamscore.generate import runner
from streamscore.generate.runner import Progress, RunSpec, quantiles

REPORT_EVERY = 0.5


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="post synthetic events to a running service",
        description="Post synthetic events (user-<k> ids, 3 uniform features, timestamps near "
        "now) to /ingest and report throughput and latency.",
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    p.add_argument("--rps", type=float, default=5000, help="events/s in total; 0 = flat out")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to send for")
    p.add_argument("--users", type=int, default=10_000, help="distinct user ids")
    p.add_argument("--batch-size", type=int, default=500, help="events per request")
    p.add_argument("--concurrency", type=int, default=8, help="connections per process")
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument("--ndjson", action="store_true", help="send application/x-ndjson bodies")
    p.add_argument("--late-fraction", type=float, default=0.0, help="share of late events")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--event-ids", action="store_true", help="give every event a unique event_id")
    p.add_argument("--record", help="append each acknowledged request's id range here (JSONL)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no live progress")


def _child(spec: RunSpec, reports: mp.Queue) -> None:
    progress = Progress()

    async def main() -> None:
        task = asyncio.create_task(runner.run(spec, progress))
        while not task.done():
            await asyncio.wait([task], timeout=REPORT_EVERY)
            reports.put(progress.take())
        await task

    asyncio.run(main())
    reports.put(None)


def generate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the load and return the summary."""
    run_id = uuid.uuid4().hex[:8]
    ctx = mp.get_context("spawn")
    reports: mp.Queue = ctx.Queue()
    procs = []
    for i in range(args.procs):
        spec = RunSpec(
            url=args.url,
            rps=args.rps / args.procs,
            duration=args.duration,
            users=args.users,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            ndjson=args.ndjson,
            late_fraction=args.late_fraction,
            seed=args.seed + i,
            event_ids=args.event_ids,
            run_id=run_id,
            first_id=i * 10**10,  # ids have 12 digits: 100 processes of 10^10 events
        )
        proc = ctx.Process(target=_child, args=(spec, reports), daemon=True)
        proc.start()
        procs.append(proc)
    total = Progress()
    record = open(args.record, "a") if args.record else None  # noqa: SIM115
    started = time.monotonic()
    live = None if args.quiet or args.json else _live_display()
    finished = 0
    try:
        while finished < len(procs):
            try:
                report = reports.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if report is None:
                finished += 1
                continue
            total.add(report)
            if record is not None:
                for first, count in report.acked:
                    record.write(f'{{"run_id":"{run_id}","first":{first},"count":{count}}}\n')
                record.flush()
            if live is not None:
                live.update(_table(total, time.monotonic() - started))
    finally:
        if live is not None:
            live.stop()
        if record is not None:
            record.close()
        for proc in procs:
            proc.join(timeout=5)
    elapsed = time.monotonic() - started
    return _summary(total, elapsed, run_id)


def _summary(total: Progress, elapsed: float, run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seconds": round(elapsed, 3),
        "requests": total.requests,
        "events_sent": total.sent_events,
        "events_acked": total.acked_events,
        "events_per_second": round(total.acked_events / elapsed, 1) if elapsed else 0.0,
        "processed": total.processed,
        "rejected": total.rejected,
        "duplicates": total.duplicates,
        "latency_seconds": quantiles(total.latencies),
        "errors": total.errors,
    }


def _live_display():  # type: ignore[no-untyped-def]
    from rich.live import Live

    live = Live(refresh_per_second=4, transient=False)
    live.start()
    return live


def _table(total: Progress, elapsed: float):  # type: ignore[no-untyped-def]
    from rich.table import Table

    q = quantiles(total.latencies)
    table = Table(title="streamscore generate")
    for column in ("elapsed s", "acked events", "events/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{elapsed:.1f}",
        f"{total.acked_events:,}",
        f"{total.acked_events / elapsed:,.0f}" if elapsed else "0",
        f"{q['p50'] * 1000:.1f}",
        f"{q['p99'] * 1000:.1f}",
        ", ".join(f"{k}: {v}" for k, v in total.errors.items()) or "0",
    )
    return table


def run(args: argparse.Namespace) -> int:
    summary = generate(args)
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        from rich.console import Console

        Console().print_json(data=summary)
    return 0 if summary["events_acked"] else 1
