"""One hot user against everyone else: the windows structure's per-call costs, memory, and the
ingest latency other users see on a real server while one user floods its window.

    .venv/bin/python -m bench.hot_user            # ~4 minutes; bench/results/hot_user-DATE.json
    .venv/bin/python -m bench.hot_user --smoke    # seconds

Phases (`--phases`). `calls`: in-process `RollingMedians` costs (median of repeated calls) for a
1000-event batch over 1000 users, a batch of 1000 and of 1 into one user holding
`--hot-events`, that user's median, and expiring 1000 of its events. `memory-users`,
`memory-hot`: this process's RSS slope per live windowed event between 1M and 10M live events
(scaled down by --smoke), spread over `--memory-users` users, or all in one hot user. `server`: `streamscore serve` on a temporary SQLite store with a
window of an hour; the hot user's window is filled with `--hot-events` events, then for
`--seconds` the hot user keeps receiving `--hot-rate` events/s (100-event requests) while probe
threads send one-event requests for other users, one at a time; their latency from send to
reply is the figure. The streamscore package is whatever `PYTHONPATH` imports, so the same
command measures another branch's structure.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import Proc, get, quantiles_ms, serve
from streamscore.windows.rolling_median import RollingMedians

ROOT = Path(__file__).resolve().parent.parent
HOT = "hot-user"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def timed(f: Any, repeat: int) -> float:
    """Median seconds of `repeat` calls of f()."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        f()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples))


def fill(
    medians: RollingMedians, users: list[str], t0: float, n: int, chunk: int = 100_000
) -> float:
    """n events, cycling over `users`, one per microsecond from t0; returns the next timestamp."""
    rng = np.random.default_rng(len(users) + n)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        ids = [users[(start + i) % len(users)] for i in range(m)]
        ts = t0 + (start + np.arange(m)) * 1e-6
        medians.insert(ids, ts, rng.random(m, dtype=np.float32))
    return t0 + n * 1e-6


def calls(hot_events: int, repeat: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    batch_ts = np.zeros(1000)
    spread = RollingMedians()
    others = [f"u{i}" for i in range(1000)]
    fill(spread, others, 0.0, 300_000)
    hot = RollingMedians()
    t = fill(hot, [HOT], 0.0, hot_events)
    one = [HOT] * 1000

    def insert_spread() -> None:
        spread.insert(others, batch_ts + 1.0, rng.random(1000, dtype=np.float32))

    def insert_hot() -> None:
        hot.insert(one, batch_ts + t, rng.random(1000, dtype=np.float32))

    def insert_one_hot() -> None:
        hot.insert([HOT], batch_ts[:1] + t, rng.random(1, dtype=np.float32))

    def expire_hot() -> None:
        nonlocal cutoff
        cutoff += 1000e-6
        hot.expire(cutoff)

    cutoff = 0.0
    figures = {
        "insert_1000_over_1000_users_us": timed(insert_spread, repeat) * 1e6,
        f"insert_1000_into_user_with_{hot_events}_us": timed(insert_hot, repeat) * 1e6,
        f"insert_1_into_user_with_{hot_events}_us": timed(insert_one_hot, repeat) * 1e6,
        f"median_of_user_with_{hot_events}_us": timed(lambda: hot.get(HOT), repeat * 10) * 1e6,
        f"expire_1000_of_user_with_{hot_events}_us": timed(expire_hot, repeat) * 1e6,
    }
    return {k: round(v, 2) for k, v in figures.items()}


def memory(n_users: int, low: int, high: int) -> dict[str, Any]:
    """RSS slope per live event between `low` and `high` live events spread over `n_users`."""
    users = [HOT] if n_users == 1 else [f"u{i}" for i in range(n_users)]
    gc.collect()
    medians = RollingMedians()
    t = fill(medians, users, 0.0, low)
    at_low = rss_bytes()
    fill(medians, users, t, high - low)
    at_high = rss_bytes()
    assert medians.events == high
    return {
        "users": n_users,
        "live_events": [low, high],
        "rss_bytes_per_event_low_to_high": round((at_high - at_low) / (high - low), 1),
        "memory_bytes_per_event_at_high": round(medians.memory_bytes() / high, 1),
    }


def post(conn: http.client.HTTPConnection, events: list[dict[str, Any]]) -> None:
    conn.request(
        "POST", "/ingest", json.dumps({"events": events}), {"content-type": "application/json"}
    )
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"ingest {response.status}: {body[:200]!r}")


def hot_events(t0: float, n: int) -> list[dict[str, Any]]:
    scores = np.random.default_rng(int(t0)).random((n, 3)).round(4).tolist()
    return [
        {"user_id": HOT, "timestamp": t0 + i * 1e-5, "features": f} for i, f in enumerate(scores)
    ]


def server(
    server_proc: Proc, fill_events: int, rate: float, seconds: float, probes: int
) -> dict[str, Any]:
    port = server_proc.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    base = time.time() - 1000.0
    chunk = 10_000
    for start in range(0, fill_events, chunk):
        post(conn, hot_events(base + start * 1e-5, min(chunk, fill_events - start)))
    fill_seconds = time.perf_counter() - started
    count = json.loads(get(port, f"/users/{HOT}/median", conn)[1])["count"]

    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(probes)]
    sent = [0]

    def hot_sender() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        per_request = 100
        interval = per_request / rate
        next_at = time.perf_counter()
        while not stop.is_set():
            post(c, hot_events(time.time(), per_request))
            sent[0] += per_request
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        c.close()

    def prober(k: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        n = 0
        while not stop.is_set():
            event = {
                "user_id": f"other-{k}-{n % 1000}",
                "timestamp": time.time(),
                "features": [0.1, 0.2, 0.3],
            }
            n += 1
            t = time.perf_counter()
            post(c, [event])
            latencies[k].append(time.perf_counter() - t)
            time.sleep(0.005)
        c.close()

    threads = [threading.Thread(target=hot_sender)] + [
        threading.Thread(target=prober, args=(k,)) for k in range(probes)
    ]
    measure_start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - measure_start
    final = json.loads(get(port, f"/users/{HOT}/median")[1])["count"]
    conn.close()
    return {
        "hot_window_events_before": count,
        "hot_window_events_after": final,
        "fill_seconds": round(fill_seconds, 2),
        "hot_events_per_second": round(sent[0] / elapsed, 1),
        "other_users_ingest": quantiles_ms([x for k in latencies for x in k]),
        "server_rss_mb": round(server_proc.rss_mb(), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds in all")
    parser.add_argument("--hot-events", type=int, default=1_000_000)
    parser.add_argument("--hot-rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument(
        "--phases",
        default="calls,memory-users,memory-hot,server",
        help="comma-separated subset (an O(window) structure cannot do memory-hot in reasonable time)",
    )
    parser.add_argument(
        "--memory-users",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[10_000, 100_000],
        help="user counts over which memory-users spreads the live events",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if args.smoke:
        args.hot_events, args.hot_rate, args.seconds = 20_000, 1000.0, 2.0
    low, high = (100_000, 400_000) if args.smoke else (1_000_000, 10_000_000)

    import streamscore

    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "streamscore": str(Path(streamscore.__file__).parent),
        "smoke": args.smoke,
    }
    if "calls" in phases:
        results["calls"] = calls(args.hot_events, repeat=5 if args.smoke else 30)
        print(json.dumps(results["calls"]), file=sys.stderr)
    shapes = {f"memory-{n}-users": n for n in args.memory_users} | {"memory-hot": 1}
    for phase, users in shapes.items():
        if phase in phases or (users > 1 and "memory-users" in phases):
            results[phase] = memory(users, low, high)
            print(json.dumps(results[phase]), file=sys.stderr)
    if "server" in phases:
        with tempfile.TemporaryDirectory() as tmp:
            proc = serve(Path(tmp) / "events.db", Path(tmp) / "server.log", "--window", "3600")
            try:
                results["server"] = server(
                    proc, args.hot_events, args.hot_rate, args.seconds, args.probes
                )
            finally:
                proc.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    name = "hot_user-smoke.json" if args.smoke else f"hot_user-{results['date'][:10]}.json"
    (args.out / name).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
