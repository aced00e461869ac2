"""The benchmark: one command, fresh stores, the real service driven by `streamscore generate`.

    .venv/bin/python -m bench.run            # full run (~20 minutes), results in bench/results/
    .venv/bin/python -m bench.run --smoke    # a few minutes; checks that every phase runs and reports

Every phase reports against baselines measured in this same run (the machines are shared and
noisy): the generator's ceiling against a server that discards bodies, and the HTTP + parse
ceiling against a server that decodes, validates and drops events.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from streamscore.history import chunks
from streamscore.store import log_codec
from streamscore.store.base import Store
from streamscore.store.postgres import PostgresStore
from streamscore.store.sqlite import INSERT_CHUNK, SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
SLOPE = (1_000_000, 10_000_000)  # live windowed events between which the RSS slope is taken


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server subprocess on 127.0.0.1."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*args, "--port", str(self.port)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=out, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited; see {self.log}")
            try:
                if get(self.port, "/health")[0] == 200 and self._backfilled():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.args} did not start; see {self.log}")

    def _backfilled(self) -> bool:
        """No feature version is still being backfilled from stored history (a background
        job at start that would otherwise share the CPU with the phase measured next)."""
        status, body = get(self.port, "/features/versions")
        return status != 200 or all(
            v["state"] != "backfilling" for v in json.loads(body)["versions"]
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)
            self.proc = None

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise KeyError("VmRSS")

    def stats(self) -> dict[str, Any]:
        return json.loads(get(self.port, "/stats")[1])


def get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def serve(store: Path | str, log: Path, *extra: str) -> Proc:
    """`streamscore serve` on a SQLite file (a Path) or a store URL (a str)."""
    url = f"sqlite:///{store}" if isinstance(store, Path) else store
    return Proc([sys.executable, "-m", "streamscore", "serve", "--store", url, *extra], log).start()


def fresh_postgres(admin_url: str) -> str:
    """A new, empty database on the PostgreSQL server of `admin_url`; returns its URL."""
    name = f"streamscore_bench_{int(time.time())}_{random.randrange(10**6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres(admin_url: str, url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")  # type: ignore[arg-type]


def log_synthetic(
    store: Store, users: list[str], timestamps: np.ndarray, batch: int = 8192
) -> None:
    """Append synthetic scored events to the store's durable log, as the writer does."""
    rng = np.random.default_rng(1)
    model_id = store.register_model("bench-synthetic")
    seq = store.last_seq() + 1
    for low in range(0, len(users), batch):
        ts = timestamps[low : low + batch]
        n = len(ts)
        blob = log_codec.encode(
            users[low : low + batch], [None] * n, ts, rng.random(n, "f4"), rng.random((n, 3))
        )
        store.append(seq, blob, model_id, 0, 0, float(ts.max()), n)
        seq += n


def index_all(store: Store) -> tuple[int, float]:
    """Run the store's indexer until the log is chunked: (events moved, seconds)."""
    started = time.perf_counter()
    moved = 0
    while step := store.index_pending():
        moved += step
    return moved, time.perf_counter() - started


def indexing_rate(store: Store, events: int) -> float:
    """Events/s that the store's indexer moves from the log into history chunks, on `events`
    synthetic logged events of 10,000 users."""
    rng = np.random.default_rng(1)
    users = [f"idx-{u}" for u in rng.integers(0, 10_000, events).tolist()]
    log_synthetic(store, users, time.time() - rng.uniform(0, 300, events))
    moved, seconds = index_all(store)
    return moved / seconds


def generate(url: str, seconds: float, rps: float = 0, **options: Any) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "streamscore",
        "generate",
        "--url",
        url,
        "--json",
        "--duration",
        str(seconds),
        "--rps",
        str(rps),
    ]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def save_result(stem: str, result: dict[str, Any], smoke: bool) -> None:
    """`bench/results/STEM-DATE.json` (`STEM-smoke.json` for a smoke run), and the JSON on
    stdout; `result["date"]` is an ISO date."""
    name = f"{stem}-smoke.json" if smoke else f"{stem}-{result['date'][:10]}.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def quantiles_ms(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0}
    p50, p99 = np.quantile(np.asarray(samples) * 1000, [0.5, 0.99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "n": len(samples)}


def probe(port: int, path: Callable[[], str], stop: threading.Event) -> list[float]:
    """Latencies of sequential GETs on one keep-alive connection until `stop`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples = []
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = get(port, path(), conn)
        samples.append(time.perf_counter() - started)
        assert status == 200, status
        time.sleep(0.002)
    conn.close()
    return samples


def visibility(port: int, stop: threading.Event) -> list[float]:
    """Seconds from a 200 on /ingest to the event's appearance in /history."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples = []
    n = 0
    while not stop.is_set():
        user = f"probe-{n}"
        n += 1
        body = json.dumps(
            {"events": [{"user_id": user, "timestamp": time.time(), "features": [0.1, 0.2, 0.3]}]}
        )
        conn.request("POST", "/ingest", body, {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        acked = time.perf_counter()
        while True:
            _, page = get(port, f"/users/{user}/history", conn)
            if json.loads(page)["history"]:
                samples.append(time.perf_counter() - acked)
                break
            time.sleep(0.005)
        time.sleep(0.1)
    conn.close()
    return samples


def run_with_probes(
    port: int, probes: dict[str, Callable[[threading.Event], list[float]]], work: Callable[[], Any]
) -> tuple[Any, dict[str, list[float]]]:
    stop = threading.Event()
    results: dict[str, list[float]] = {}
    threads = [
        threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f(stop)))
        for k, f in probes.items()
    ]
    for t in threads:
        t.start()
    try:
        outcome = work()
    finally:
        stop.set()
        for t in threads:
            t.join()
    return outcome, results


def build_history_store(path: Path, events: int, per_user: int) -> float:
    """A store of `events` history events, `per_user` per user one minute apart, written as
    the chunker writes them (`history.chunks.split`), straight into `history_chunks`."""
    SQLiteStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT OR IGNORE INTO models (version, created_at) VALUES ('bench-synthetic', 0)")
    (model_id,) = conn.execute(
        "SELECT model_id FROM models WHERE version='bench-synthetic'"
    ).fetchone()
    started = time.perf_counter()
    step = max(per_user, 500_000 // per_user * per_user)  # whole users per flush
    base = time.time() - 86_400 * 30
    rng = np.random.default_rng(0)
    for low in range(0, events, step):
        x = np.arange(low, min(events, low + step))
        users = [f"hist-{u:07d}" for u in (x // per_user).tolist()]
        rows = [
            chunk.row()
            for chunk in chunks.split(
                users,
                [None] * len(x),
                base + (x % per_user) * 60.0,
                rng.random(len(x)).astype(np.float32),
                np.tile([0.1, 0.2, 0.3], (len(x), 1)),
                x + 1,
                np.full(len(x), model_id),
            )
        ]
        conn.execute("BEGIN")
        conn.executemany(INSERT_CHUNK, rows)
        conn.execute("COMMIT")
    conn.execute("UPDATE meta SET value=? WHERE key='indexed_seq'", (events,))
    conn.close()
    return time.perf_counter() - started


def small_requests(url: str, users: int, seconds: float) -> dict[str, Any]:
    """Flat-out 10-event and 1-event requests on 50 connections (the seeds' load shape)."""
    loads = {}
    for name, size in (("ten_event", 10), ("single_event", 1)):
        run = generate(url, seconds, batch_size=size, concurrency=50, users=users)
        loads[name] = {
            "requests_per_second": round(run["requests"] / run["seconds"]),
            "events_per_second": run["events_per_second"],
            "p50_ms": round(run["latency_seconds"]["p50"] * 1000, 2),
            "p99_ms": round(run["latency_seconds"]["p99"] * 1000, 2),
            "errors": run["errors"],
        }
    return loads


def deep_user_history(
    store: Store, where: Path | str, log: Path, events: int, seconds: float
) -> dict[str, Any]:
    """10,000-row history pages of one user with `events` events (0.1 s apart, ending an hour
    ago), chunked by the store's own indexer, from random `since` points. Closes `store`."""
    end = time.time() - 3600
    timestamps = end - 0.1 * np.arange(events, dtype=np.float64)[::-1]
    log_synthetic(store, ["deep-user"] * events, timestamps)
    moved, index_seconds = index_all(store)
    store.close()
    server = serve(where, log)
    first = float(timestamps[0])
    span = 0.1 * (events - 10_000)

    def page(stop: threading.Event) -> list[float]:
        return probe(
            server.port,
            lambda: f"/users/deep-user/history?limit=10000&since={first + random.random() * span}",
            stop,
        )

    _, probes = run_with_probes(server.port, {"page": page}, lambda: time.sleep(seconds))
    status, body = get(server.port, f"/users/deep-user/history?limit=10000&since={first}")
    rows = len(json.loads(body)["history"]) if status == 200 else 0
    server.stop()
    return {
        "user_events": events,
        "rows_per_page": rows,
        "index_seconds": round(index_seconds, 1),
        "indexed": moved,
        **quantiles_ms(probes["page"]),
    }


def rss_slope(
    where: Path | str, log: Path, low: int, high: int, chunk_seconds: float, budget: float = 900
) -> dict[str, Any]:
    """Marginal RSS per live windowed event: the RSS slope between the first samples with at
    least `low` and at least `high` live events (100,000 users, a one-hour window, flat-out
    500-event requests generated `chunk_seconds` at a time, for at most `budget` seconds)."""
    server = serve(where, log, "--window", "3600")
    points: dict[str, tuple[int, float]] = {}
    deadline = time.monotonic() + budget
    try:
        while "high" not in points:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {high:,} live events after {budget:g} s")
            generate(server.url, chunk_seconds, batch_size=500, concurrency=16, users=100_000)
            live = server.stats()["windowed_events"]
            if "low" not in points and live >= low:
                points["low"] = (live, server.rss_mb())
            elif "low" in points and live >= high:
                points["high"] = (live, server.rss_mb())
    finally:
        server.stop()
    (n_low, rss_low), (n_high, rss_high) = points["low"], points["high"]
    return {
        "events_low": n_low,
        "events_high": n_high,
        "rss_mb_low": round(rss_low, 1),
        "rss_mb_high": round(rss_high, 1),
        "bytes_per_event": round((rss_high - rss_low) * 2**20 / (n_high - n_low), 1),
    }


def ingest_phases(
    server: Proc,
    gen: dict[str, Any],
    args: argparse.Namespace,
    short: float,
    phase: Callable[[str], None],
    baseline_parse_eps: float,
) -> dict[str, Any]:
    """Sustained durable throughput (JSON, then NDJSON) on a fresh store, then ingest latency,
    median latency and ack-to-history visibility at half that rate, then 10-event and 1-event
    requests. Stops the server. The half-rate and small-request loads run at least 15 and
    10 s, for enough visibility samples and a steady p99, except in a smoke run."""
    steady, small = (short, short) if args.smoke else (max(short, 15), max(short, 10))
    phase("throughput")
    generate(server.url, 2, **gen)  # warm-up: kernels compiled, caches filled
    json_run = generate(server.url, args.seconds, **gen)
    ndjson_run = generate(server.url, args.seconds, ndjson=True, **gen)
    results: dict[str, Any] = {}
    results["throughput"] = {
        "json_eps": json_run["events_per_second"],
        "json_errors": json_run["errors"],
        "ndjson_eps": ndjson_run["events_per_second"],
        "ndjson_errors": ndjson_run["errors"],
        "json_vs_parse_ceiling": round(json_run["events_per_second"] / baseline_parse_eps, 3),
    }

    # Half the peak rate: ingest latency, median latency, ack-to-history visibility,
    # measured in steady state: first let the indexer catch up with the flat-out phase.
    phase("half rate")
    deadline = time.monotonic() + 120
    while server.stats()["index_lag_events"] > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    half = json_run["events_per_second"] / 2
    users = [f"user-{i}" for i in range(gen["users"])]
    run, probes = run_with_probes(
        server.port,
        {
            "median": lambda stop: probe(
                server.port, lambda: f"/users/{random.choice(users)}/median", stop
            ),
            "visibility": lambda stop: visibility(server.port, stop),
        },
        lambda: generate(server.url, steady, rps=half, **gen),
    )
    results["half_rate"] = {
        "target_eps": round(half),
        "achieved_eps": run["events_per_second"],
        "ingest_p50_ms": round(run["latency_seconds"]["p50"] * 1000, 2),
        "ingest_p99_ms": round(run["latency_seconds"]["p99"] * 1000, 2),
        "median": quantiles_ms(probes["median"]),
        "visible_in_history": quantiles_ms(probes["visibility"]),
    }
    phase("small requests")
    results["small_requests"] = small_requests(server.url, gen["users"], small)
    server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run: every phase, seconds each")
    parser.add_argument("--seconds", type=float, default=30, help="throughput phase length")
    parser.add_argument("--history-events", type=int, default=20_000_000)
    parser.add_argument("--soak", type=float, default=0, help="also run a steady-rate soak")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL server to run the same ingest phases on, in fresh databases "
        "('' skips them)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.history_events = 2, 100_000
    short = max(2.0, args.seconds / 3)
    work = Path(tempfile.mkdtemp(prefix="streamscore-bench-"))
    log = work / "servers.log"
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{subprocess.getoutput('nproc')} cores",
        "smoke": args.smoke,
    }
    gen = {"batch_size": 500, "concurrency": 16, "users": 10_000}

    def phase(name: str) -> None:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)

    # Baselines: generator ceiling, HTTP + parse ceiling.
    for mode in ("discard", "parse"):
        phase(f"baseline {mode}")
        base = Proc([sys.executable, "-m", "bench.baseline", mode], log).start()
        results[f"baseline_{mode}_eps"] = generate(base.url, short, **gen)["events_per_second"]
        if mode == "discard":  # the generator's own ceiling on small requests
            results["baseline_discard_small"] = small_requests(base.url, gen["users"], short)
        base.stop()

    # 1-4 on each store: durable throughput, then latency and visibility at half that rate.
    results.update(
        ingest_phases(
            serve(work / "tp" / "events.db", log),
            gen,
            args,
            short,
            phase,
            results["baseline_parse_eps"],
        )
    )
    if args.postgres:
        phase("postgresql")
        url = fresh_postgres(args.postgres)
        try:
            pg = ingest_phases(
                serve(url, log), gen, args, short, phase, results["baseline_parse_eps"]
            )
        finally:
            drop_postgres(args.postgres, url)
        pg["throughput"]["json_vs_sqlite"] = round(
            pg["throughput"]["json_eps"] / results["throughput"]["json_eps"], 3
        )
        results["postgresql"] = pg

    # Indexing rate of each store (the part of the pipeline that bounds durable throughput).
    phase("indexing rate")
    indexed = 200_000 if args.smoke else 2_000_000
    sqlite_store = SQLiteStore(work / "idx" / "events.db")
    results["indexing_eps"] = {"sqlite": round(indexing_rate(sqlite_store, indexed))}
    sqlite_store.close()
    if args.postgres:
        url = fresh_postgres(args.postgres)
        try:
            pg_store = PostgresStore(url)
            results["indexing_eps"]["postgresql"] = round(indexing_rate(pg_store, indexed))
            pg_store.close()
        finally:
            drop_postgres(args.postgres, url)

    # 5. History of one user (~500 rows) on a large store.
    phase(f"history on {args.history_events:,} events")
    per_user = 500
    build_seconds = build_history_store(work / "hist" / "events.db", args.history_events, per_user)
    server = serve(work / "hist" / "events.db", log)
    n_users = args.history_events // per_user
    _, probes = run_with_probes(
        server.port,
        {
            "history": lambda stop: probe(
                server.port,
                lambda: f"/users/hist-{random.randrange(n_users):07d}/history?limit=500",
                stop,
            )
        },
        lambda: time.sleep(short),
    )
    results["history"] = {
        "store_events": args.history_events,
        "rows_per_query": per_user,
        "store_build_seconds": round(build_seconds, 1),
        **quantiles_ms(probes["history"]),
    }
    server.stop()

    # 5b. Deep history (10,000-row pages of a user with 1M events) and the marginal RSS slope
    # per live windowed event, on each store.
    deep_events = 20_000 if args.smoke else 1_000_000
    low, high = (50_000, 400_000) if args.smoke else SLOPE
    chunk_seconds = 1 if args.smoke else 5
    phase(f"deep history ({deep_events:,} events of one user) and RSS slope, sqlite")
    deep_path = work / "deep" / "events.db"
    results["deep_history"] = {
        "sqlite": deep_user_history(SQLiteStore(deep_path), deep_path, log, deep_events, short)
    }
    results["rss_slope"] = {
        "sqlite": rss_slope(work / "slope" / "events.db", log, low, high, chunk_seconds)
    }
    if args.postgres:
        phase("deep history and RSS slope, postgresql")
        url = fresh_postgres(args.postgres)
        try:
            results["deep_history"]["postgresql"] = deep_user_history(
                PostgresStore(url), url, log, deep_events, short
            )
        finally:
            drop_postgres(args.postgres, url)
        url = fresh_postgres(args.postgres)
        try:
            results["rss_slope"]["postgresql"] = rss_slope(url, log, low, high, chunk_seconds)
        finally:
            drop_postgres(args.postgres, url)

    # 6-7. Memory per windowed event with 10k and 100k users; restart time.
    for users_n in (10_000, 100_000):
        phase(f"memory, {users_n:,} users")
        store = work / f"mem{users_n}" / "events.db"
        server = serve(store, log)
        generate(server.url, 1, **{**gen, "users": users_n})
        before = server.rss_mb()
        baseline_events = server.stats()["windowed_events"]
        generate(server.url, args.seconds, **{**gen, "users": users_n})
        stats = server.stats()
        after = server.rss_mb()
        live = stats["windowed_events"] - baseline_events
        server.stop()
        started = time.perf_counter()
        server = serve(store, log)
        restart = time.perf_counter() - started
        recovered = server.stats()
        server.stop()
        results[f"memory_{users_n}_users"] = {
            "windowed_events": stats["windowed_events"],
            "rss_mb": round(after, 1),
            "rss_bytes_per_windowed_event": round((after - before) * 2**20 / max(live, 1), 1),
            "window_bytes_per_windowed_event": round(
                stats["window_bytes"] / max(stats["windowed_events"], 1), 1
            ),
            "restart_seconds_to_ready": round(restart, 2),
            "recovery_seconds": round(recovered["recovery_seconds"], 2),
            "medians_equal_after_restart": recovered["median_of_medians"]
            == stats["median_of_medians"],
        }

    if args.soak:
        phase(f"soak {args.soak:.0f} s")
        half = results["throughput"]["json_eps"] / 2
        server = serve(work / "soak" / "events.db", log, "--window", "30")
        samples: list[tuple[float, float]] = []

        def sample(stop: threading.Event) -> list[float]:
            while not stop.wait(5):
                samples.append((time.monotonic(), server.rss_mb()))
            return []

        run, _ = run_with_probes(
            server.port, {"rss": sample}, lambda: generate(server.url, args.soak, rps=half, **gen)
        )
        steady = [rss for t, rss in samples if t - samples[0][0] > 60]
        results["soak"] = {
            "seconds": args.soak,
            "eps": run["events_per_second"],
            "rss_mb_first_after_60s": round(steady[0], 1) if steady else None,
            "rss_mb_max_after_60s": round(max(steady), 1) if steady else None,
            "rss_mb_last": round(samples[-1][1], 1) if samples else None,
        }
        server.stop()

    args.out.mkdir(parents=True, exist_ok=True)
    name = "smoke.json" if args.smoke else f"bench-{results['date'][:10]}.json"
    (args.out / name).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(table(results))
    return 0


def table(r: dict[str, Any]) -> str:
    tp, hr, hist = r["throughput"], r["half_rate"], r["history"]
    m10, m100 = r["memory_10000_users"], r["memory_100000_users"]
    rows = [
        ("generator ceiling (discarding server)", f"{r['baseline_discard_eps']:,.0f} events/s"),
        ("HTTP + parse ceiling", f"{r['baseline_parse_eps']:,.0f} events/s"),
        (
            "durable ingest, JSON 500/batch",
            f"{tp['json_eps']:,.0f} events/s ({tp['json_vs_parse_ceiling']:.0%} of parse ceiling)",
        ),
        ("durable ingest, NDJSON", f"{tp['ndjson_eps']:,.0f} events/s"),
        (
            "ingest latency at half peak",
            f"p50 {hr['ingest_p50_ms']} ms, p99 {hr['ingest_p99_ms']} ms",
        ),
        (
            "median query at half peak",
            f"p50 {hr['median']['p50_ms']} ms, p99 {hr['median']['p99_ms']} ms",
        ),
        (
            "ack to visible in history",
            f"p50 {hr['visible_in_history']['p50_ms']} ms, p99 {hr['visible_in_history']['p99_ms']} ms",
        ),
        *_small_rows("generator ceiling: ", r["baseline_discard_small"]),
        *_small_rows("", r["small_requests"]),
        (
            f"history, 500 rows, {hist['store_events']:,}-event store",
            f"p50 {hist['p50_ms']} ms, p99 {hist['p99_ms']} ms",
        ),
        (
            "RSS / windowed event, 10k users",
            f"{m10['rss_bytes_per_windowed_event']} B (window arrays {m10['window_bytes_per_windowed_event']} B)",
        ),
        (
            "RSS / windowed event, 100k users",
            f"{m100['rss_bytes_per_windowed_event']} B (window arrays {m100['window_bytes_per_windowed_event']} B)",
        ),
        (
            "restart, 100k users",
            f"{m100['restart_seconds_to_ready']} s to ready ({m100['recovery_seconds']} s rebuilding {m100['windowed_events']:,} events)",
        ),
    ]
    if "postgresql" in r:
        pg = r["postgresql"]
        rows += [
            (
                "PostgreSQL: durable ingest, JSON / NDJSON",
                f"{pg['throughput']['json_eps']:,.0f} / {pg['throughput']['ndjson_eps']:,.0f} "
                f"events/s ({pg['throughput']['json_vs_sqlite']:.0%} of SQLite's)",
            ),
            (
                "PostgreSQL: ingest latency at half peak",
                f"p50 {pg['half_rate']['ingest_p50_ms']} ms, p99 {pg['half_rate']['ingest_p99_ms']} ms",
            ),
            (
                "PostgreSQL: ack to visible in history",
                f"p50 {pg['half_rate']['visible_in_history']['p50_ms']} ms, "
                f"p99 {pg['half_rate']['visible_in_history']['p99_ms']} ms",
            ),
            (
                "PostgreSQL: median query at half peak",
                f"p50 {pg['half_rate']['median']['p50_ms']} ms, p99 {pg['half_rate']['median']['p99_ms']} ms",
            ),
            *_small_rows("PostgreSQL: ", pg["small_requests"]),
        ]
    for store, deep in r["deep_history"].items():
        rows.append(
            (
                f"history, {deep['rows_per_page']:,}-row page, user of {deep['user_events']:,} events, {store}",
                f"p50 {deep['p50_ms']} ms, p99 {deep['p99_ms']} ms",
            )
        )
    for store, slope in r["rss_slope"].items():
        rows.append(
            (
                f"marginal RSS / live event, {slope['events_low']:,} to {slope['events_high']:,}, {store}",
                f"{slope['bytes_per_event']} B ({slope['rss_mb_low']} to {slope['rss_mb_high']} MB)",
            )
        )
    rows += [
        (f"indexing rate, {store}", f"{eps:,.0f} events/s")
        for store, eps in r["indexing_eps"].items()
    ]
    if "soak" in r:
        soak = r["soak"]
        rows.append(
            (
                f"RSS during a {soak['seconds']:.0f} s soak (window 30 s)",
                f"{soak['rss_mb_first_after_60s']} MB after 60 s, max {soak['rss_mb_max_after_60s']} MB, "
                f"last {soak['rss_mb_last']} MB at {soak['eps']:,.0f} events/s",
            )
        )
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"| {a:<{width}} | {b} |" for a, b in rows)


def _small_rows(prefix: str, loads: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            f"{prefix}{label} requests, 50 connections",
            f"{load['requests_per_second']:,} requests/s ({load['events_per_second']:,.0f} events/s), "
            f"p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms",
        )
        for label, load in (("10-event", loads["ten_event"]), ("1-event", loads["single_event"]))
    ]


if __name__ == "__main__":
    sys.exit(main())
