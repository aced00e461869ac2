"""Cluster scaling: one node pinned to one core against two nodes pinned to a core each.

    .venv/bin/python -m bench.cluster [--seconds 20] [--senders 4] [--smoke]

Each configuration gets a fresh PostgreSQL database and cluster (stream, bucket, schema) on the
local NATS; nodes run `taskset -c <core>`; NATS, PostgreSQL and the load generator are not
pinned. The generator posts 500-event JSON bodies (events without ids, so one bus message per
partition and request) flat out for `--seconds`, its senders spread over the nodes. Reported
per configuration:

- `acked_per_s`: events acknowledged per second (durable in JetStream);
- `stored_per_s`: the same events divided by the time until the owners had committed all of
  them to PostgreSQL (end-to-end capacity; owners may trail the acks);

and the ratios 2 nodes / 1 node (issue 17's target: >= 1.5). Then the take-over time with
the default heartbeat settings (2 s, dead after 6 s): three nodes under load, one killed
(SIGKILL) `--kills` times, each time the seconds until every partition is owned by a live node
and caught up (issue 17's bound: 15 s). Results go to `bench/results/cluster-DATE.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import numpy as np

from bench.features import _sender, bodies
from bench.run import Proc, drop_postgres, fresh_postgres, get, save_result

POSTGRES = os.environ.get("STREAMSCORE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NATS = os.environ.get("STREAMSCORE_BENCH_NATS", "nats://127.0.0.1:4222")


def node(core: int | None, index: int, name: str, store: str, model: Path, log: Path) -> Proc:
    pin = core is not None and shutil.which("taskset")
    args = [
        *(["taskset", "-c", str(core)] if pin else []),
        sys.executable,
        "-m",
        "streamscore",
        "serve",
        "--cluster",
        NATS,
        "--node-id",
        f"n{index}",
        "--cluster-name",
        name,
        "--store",
        store,
        "--model",
        str(model),
    ]
    return Proc(args, log).start()


def owned(procs: list[Proc], partitions: int) -> bool:
    """Every partition owned and caught up by exactly one of `procs` (as each sees it)."""
    seen: list[int] = []
    for p in procs:
        seen += json.loads(get(p.port, "/stats")[1])["partitions"]
    return sorted(seen) == list(range(partitions))


def stored(proc: Proc) -> int:
    return int(json.loads(get(proc.port, "/stats")[1])["cluster"]["events"])


def run(nodes: int, seconds: float, senders: int, work: Path, payloads: list[bytes]) -> dict:
    name = f"bench{uuid.uuid4().hex[:8]}"
    store = fresh_postgres(POSTGRES)
    model = work / "model.pt"
    procs = []
    try:
        procs = [
            node(i % (os.cpu_count() or 1), i, name, store, model, work / f"{name}-n{i}.log")
            for i in range(nodes)
        ]
        deadline = time.monotonic() + 60
        while not owned(procs, 64):
            if time.monotonic() > deadline:
                raise RuntimeError("partitions not settled")
            time.sleep(0.2)
        queue: Any = mp.get_context("spawn").Queue()
        workers = [
            mp.get_context("spawn").Process(
                target=_sender, args=(procs[k % nodes].port, payloads, seconds, 0, queue)
            )
            for k in range(senders)
        ]
        started = time.perf_counter()
        for w in workers:
            w.start()
        acked = sum(queue.get()[0] for _ in workers)
        send_seconds = time.perf_counter() - started
        for w in workers:
            w.join()
        while stored(procs[0]) < acked:
            if time.perf_counter() - started > seconds * 20 + 120:
                raise RuntimeError(f"owners stored {stored(procs[0])} of {acked} events")
            time.sleep(0.05)
        store_seconds = time.perf_counter() - started
        return {
            "nodes": nodes,
            "events": acked,
            "acked_per_s": round(acked / send_seconds),
            "stored_per_s": round(acked / store_seconds),
            "drain_seconds": round(store_seconds - send_seconds, 2),
        }
    finally:
        for p in procs:
            p.stop()
        drop_postgres(POSTGRES, store)
        asyncio.run(_delete(name))


def takeover(kills: int, seconds: float, senders: int, work: Path, payloads: list[bytes]) -> list:
    """Seconds from each SIGKILL until every partition is owned again (and caught up)."""
    name = f"bench{uuid.uuid4().hex[:8]}"
    store = fresh_postgres(POSTGRES)
    model = work / "model.pt"
    procs = []
    times = []
    try:
        procs = [node(None, i, name, store, model, work / f"{name}-n{i}.log") for i in range(3)]
        while not owned(procs, 64):
            time.sleep(0.2)
        for k in range(kills):
            queue: Any = mp.get_context("spawn").Queue()
            live = procs[:]
            workers = [
                mp.get_context("spawn").Process(
                    target=_sender, args=(live[j % 2].port, payloads, seconds, 0, queue)
                )
                for j in range(senders)
            ]
            for w in workers:
                w.start()
            time.sleep(seconds / 2)
            victim = procs[2]
            assert victim.proc is not None
            victim.proc.kill()
            victim.proc.wait()
            victim.proc = None
            killed = time.perf_counter()
            while True:
                try:
                    if owned(procs[:2], 64):
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            times.append(round(time.perf_counter() - killed, 2))
            for _ in workers:
                queue.get()
            for w in workers:
                w.join()
            if k < kills - 1:
                victim.start()
                while not owned(procs, 64):
                    time.sleep(0.2)
        return times
    finally:
        for p in procs:
            p.stop()
        drop_postgres(POSTGRES, store)
        asyncio.run(_delete(name))


async def _delete(name: str) -> None:
    nc = await nats.connect(NATS)
    js = nc.jetstream()
    await js.delete_stream(name)
    await js.delete_key_value(f"{name}-meta")
    await nc.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="3 s per configuration, one kill")
    args = parser.parse_args()
    seconds = 3.0 if args.smoke else args.seconds
    from streamscore.scoring.model import create_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        create_model(work / "model.pt")
        payloads = bodies(np.random.default_rng(1), 32, 500, 10_000)
        one = run(1, seconds, args.senders, work, payloads)
        two = run(2, seconds, args.senders, work, payloads)
        kills = takeover(1 if args.smoke else args.kills, 8.0, 2, work, payloads)
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.cluster" + (" --smoke" if args.smoke else ""),
        "cores": os.cpu_count(),
        "seconds": seconds,
        "one_node": one,
        "two_nodes": two,
        "acked_ratio": round(two["acked_per_s"] / one["acked_per_s"], 2),
        "stored_ratio": round(two["stored_per_s"] / one["stored_per_s"], 2),
        "target_ratio": 1.5,
        "takeover_seconds": kills,
        "takeover_bound": 15.0,
    }
    save_result("cluster", result, args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
