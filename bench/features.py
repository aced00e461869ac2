"""The feature engine's costs: ingest with the default set on vs off, memory per user with a
week of state, restart to ready, and the features API's latency under ingest.

    .venv/bin/python -m bench.features            # ~10 minutes; bench/results/features-DATE.json
    .venv/bin/python -m bench.features --smoke    # a minute, small sizes

Phases (`--phases`):

- `rate`: `streamscore serve` on fresh SQLite stores, alternately `--features off` and the
  default set (`--rounds` each), driven flat out for `--seconds` by `--senders` processes
  posting pre-encoded 2,000-event bodies whose events carry event types and attributes; events/s
  acknowledged, and on/off (target >= 80 %).
- `memory`: in process, the default set fed `--users` users with `--events-per-user` events over
  seven days of event time (types, amounts, devices); `FeatureEngine.memory_bytes() / users`
  after compaction (target <= 4 KiB), the checkpoint's size and the time it holds the lock,
  and an incremental checkpoint's size and time after 1 % of the users had an event.
- `restart`: the same events appended to a SQLite store's log and indexed into history, the
  engine's checkpoints (the base and the delta) saved as the running service would, then
  `--tail` more events logged
  after it; `streamscore serve` on that store, seconds from launch to `/ready` (target <= 30 s)
  and the features' own restore + replay seconds from its log.
- `api`: on the restarted server, ingest at `--half-rate` events/s (half the measured peak when
  `rate` ran) while probes read `GET /users/{id}/features` (one user) and `POST
  /features/lookup` (1,000 users); p50/p99 (targets 2 ms / 20 ms).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench.run import Proc, quantiles_ms, serve

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400.0
TYPES = np.array(["view", "view", "view", "click", "purchase"], dtype=object)
DEVICES = np.array(["web", "ios", "android", "tv"], dtype=object)


def synthetic(rng: np.random.Generator, users: int, per_user: int, end: float) -> dict[str, Any]:
    """`users * per_user` events over the week before `end`, in timestamp order (columns)."""
    n = users * per_user
    ts = np.sort(rng.uniform(end - 7 * DAY, end, n))
    user = rng.integers(0, users, n)
    types = TYPES[rng.integers(0, len(TYPES), n)].tolist()
    amounts = np.round(rng.uniform(1, 200, n), 2).tolist()
    devices = DEVICES[rng.integers(0, len(DEVICES), n)].tolist()
    attrs = [
        {"amount": a, "device_type": d} if t == "purchase" else {"device_type": d}
        for t, a, d in zip(types, amounts, devices, strict=True)
    ]
    return {
        "user_ids": [f"user-{u}" for u in user.tolist()],
        "timestamps": ts,
        "event_types": types,
        "attributes": attrs,
        "scores": rng.uniform(0, 1, n),
    }


def bodies(rng: np.random.Generator, count: int, size: int, users: int) -> list[bytes]:
    """Request bodies of `size` events each, timestamps within the last hour."""
    out = []
    for _ in range(count):
        cols = synthetic(rng, users, 1, time.time())
        pick = rng.choice(users, size, replace=False) if users >= size else np.arange(size) % users
        events = []
        for i in pick.tolist():
            events.append(
                {
                    "user_id": cols["user_ids"][i],
                    "timestamp": time.time() - float(rng.uniform(0, 3600)),
                    "features": [float(x) for x in rng.uniform(0, 1, 3)],
                    "event_type": cols["event_types"][i],
                    "attributes": cols["attributes"][i],
                }
            )
        out.append(msgspec.json.encode({"events": events}))
    return out


def _sender(port: int, payloads: list[bytes], seconds: float, rate: float, out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent, k, started = 0, 0, time.perf_counter()
    per_body = len(json.loads(payloads[0])["events"])
    while (elapsed := time.perf_counter() - started) < seconds:
        if rate and sent > rate * elapsed:
            time.sleep(min(0.01, sent / rate - elapsed))
            continue
        conn.request(
            "POST", "/ingest", payloads[k % len(payloads)], {"content-type": "application/json"}
        )
        response = conn.getresponse()
        body = response.read()
        if response.status == 200:
            sent += json.loads(body)["processed"]
        k += 1
    out.put((sent, per_body))


def drive(port: int, payloads: list[bytes], seconds: float, senders: int, rate: float = 0) -> float:
    """Events/s acknowledged by `senders` processes posting for `seconds` (0 rate: flat out)."""
    queue: Any = mp.get_context("spawn").Queue()
    procs = [
        mp.get_context("spawn").Process(
            target=_sender, args=(port, payloads, seconds, rate / senders, queue)
        )
        for _ in range(senders)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    total = sum(queue.get()[0] for _ in procs)
    for p in procs:
        p.join()
    return total / (time.perf_counter() - started)


def rate_phase(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    payloads = bodies(rng, 8, 2000, args.rate_users)
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(args.rounds):
        for mode in ("off", "on"):
            store = work / f"rate-{mode}-{r}.db"
            extra = ["--features", "off"] if mode == "off" else []
            proc = serve(store, work / f"rate-{mode}-{r}.log", *extra)
            try:
                drive(proc.port, payloads[:1], 1.0, 1)  # warm up (numba, torch)
                runs[mode].append(drive(proc.port, payloads, args.seconds, args.senders))
            finally:
                proc.stop()
            print(f"rate {mode} round {r}: {runs[mode][-1]:,.0f} events/s", flush=True)
    off, on = float(np.median(runs["off"])), float(np.median(runs["on"]))
    return {"events_per_s_off": runs["off"], "events_per_s_on": runs["on"], "on_over_off": on / off}


def memory_phase(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], list[tuple[bytes, int]], dict[str, Any]]:
    """Also returns the checkpoints `(bytes, seq covered)`, a base and a delta over it."""
    from streamscore.features.definitions import default
    from streamscore.features.engine import FeatureEngine, encode_checkpoint

    rng = np.random.default_rng(2)
    cols = synthetic(rng, args.users, args.events_per_user, time.time() - 600)
    engine = FeatureEngine(default())
    n = len(cols["user_ids"])
    started = time.perf_counter()
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        engine.update(
            cols["user_ids"][lo:hi], cols["timestamps"][lo:hi], cols["event_types"][lo:hi],
            cols["attributes"][lo:hi], cols["scores"][lo:hi],
        )  # fmt: skip
    update_s = time.perf_counter() - started
    engine.compact()
    memory = engine.memory_bytes()
    started = time.perf_counter()
    snapshot = engine.snapshot()  # what holds the engine's lock
    locked_s = time.perf_counter() - started
    data = encode_checkpoint(snapshot)
    checkpoint_s = time.perf_counter() - started
    # An incremental checkpoint after 1 % of the users had an event (appended to `cols`, so
    # that the restart phase's store holds them too).
    extra = synthetic(rng, max(1, args.users // 100), 1, time.time() - 590)
    extra["user_ids"] = [f"user-{k}" for k in range(0, args.users, 100)][: len(extra["user_ids"])]
    engine.update(
        extra["user_ids"], extra["timestamps"], extra["event_types"], extra["attributes"],
        extra["scores"],
    )  # fmt: skip
    for key, column in extra.items():
        cols[key] = (
            np.concatenate([cols[key], column]) if isinstance(column, np.ndarray)
            else cols[key] + column
        )  # fmt: skip
    started = time.perf_counter()
    delta = encode_checkpoint(engine.snapshot(delta=True))
    delta_s = time.perf_counter() - started
    result = {
        "users": engine.users,
        "events": n,
        "update_events_per_s": n / update_s,
        "bytes_per_user": memory / engine.users,
        "checkpoint_bytes": len(data),
        "checkpoint_seconds": checkpoint_s,
        "checkpoint_lock_seconds": locked_s,
        "delta_users": len(extra["user_ids"]),
        "delta_checkpoint_bytes": len(delta),
        "delta_checkpoint_seconds": delta_s,
    }
    print(f"memory: {result}", flush=True)
    return result, [(data, n), (delta, n + len(extra["user_ids"]))], cols


def restart_phase(
    args: argparse.Namespace,
    work: Path,
    checkpoints: list[tuple[bytes, int]],
    cols: dict[str, Any],
) -> tuple[dict[str, Any], Proc]:
    from streamscore.features.stage import Group, save_group
    from streamscore.store import log_codec
    from streamscore.store.sqlite import SQLiteStore

    path = work / "restart.db"
    store = SQLiteStore(path)
    model_id = store.register_model("bench-features")
    n = len(cols["user_ids"])
    seq = 1
    started = time.perf_counter()
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        blob = log_codec.encode(
            cols["user_ids"][lo:hi], [None] * (hi - lo), cols["timestamps"][lo:hi],
            cols["scores"][lo:hi], np.zeros((hi - lo, 3)),
            event_types=cols["event_types"][lo:hi], attributes=cols["attributes"][lo:hi],
        )  # fmt: skip
        store.append(seq, blob, model_id, 0, 0, float(cols["timestamps"][hi - 1]), hi - lo)
        seq += hi - lo
        while store.index_pending():
            pass
    build_s = time.perf_counter() - started
    from streamscore.features.definitions import default
    from streamscore.features.engine import FeatureEngine
    from streamscore.features.stage import check_versions

    check_versions(default(), store)
    group = Group(FeatureEngine(default()), seq - 1, True, versions=("v1",))
    for i, (data, covered) in enumerate(checkpoints):  # a base, then a delta
        save_group(store, group, data, covered, delta=i > 0)
    rng = np.random.default_rng(3)
    tail = synthetic(rng, args.users, 1, time.time() - 300)
    k = min(args.tail, len(tail["user_ids"]))
    blob = log_codec.encode(
        tail["user_ids"][:k], [None] * k, tail["timestamps"][:k], tail["scores"][:k],
        np.zeros((k, 3)), event_types=tail["event_types"][:k], attributes=tail["attributes"][:k],
    )  # fmt: skip
    store.append(seq, blob, model_id, 0, 0, float(tail["timestamps"][:k].max()), k)
    store.close()
    started = time.perf_counter()
    proc = serve(path, work / "restart.log")  # returns once /health answers
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=30)
        conn.request("GET", "/ready")
        if conn.getresponse().status == 200:
            break
        time.sleep(0.05)
    ready_s = time.perf_counter() - started
    restored = [
        json.loads(line)
        for line in (work / "restart.log").read_text().splitlines()
        if '"features restored"' in line
    ][-1]
    result = {
        "users": args.users,
        "stored_events": n,
        "store_build_seconds": build_s,
        "tail_events": k,
        "launch_to_ready_seconds": ready_s,
        "features_restore_seconds": restored["seconds"],
        "features_replayed_events": restored["replayed_events"],
    }
    print(f"restart: {result}", flush=True)
    return result, proc


def api_phase(args: argparse.Namespace, proc: Proc, half_rate: float) -> dict[str, Any]:
    rng = np.random.default_rng(4)
    payloads = bodies(rng, 8, 1000, args.users)
    users = [f"user-{i}" for i in range(args.users)]
    lookup = msgspec.json.encode({"users": users[:1000]})
    samples: dict[str, list[float]] = {"one_user": [], "lookup_1000": []}
    stop = threading.Event()

    def probe() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=30)
        k = 0
        while not stop.is_set():
            started = time.perf_counter()
            conn.request("GET", f"/users/{users[k % len(users)]}/features")
            assert conn.getresponse().read() and True
            samples["one_user"].append(time.perf_counter() - started)
            started = time.perf_counter()
            conn.request("POST", "/features/lookup", lookup, {"content-type": "application/json"})
            conn.getresponse().read()
            samples["lookup_1000"].append(time.perf_counter() - started)
            k += 1
            time.sleep(0.01)

    thread = threading.Thread(target=probe)
    thread.start()
    achieved = drive(proc.port, payloads, args.seconds, args.senders, rate=half_rate)
    stop.set()
    thread.join()
    result = {
        "ingest_target_events_per_s": half_rate,
        "ingest_events_per_s": achieved,
        "one_user": quantiles_ms(samples["one_user"]),
        "lookup_1000": quantiles_ms(samples["lookup_1000"]),
    }
    print(f"api: {result}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, seconds")
    parser.add_argument("--phases", default="rate,memory,restart,api")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--rate-users", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--tail", type=int, default=20_000)
    parser.add_argument("--half-rate", type=float, default=0, help="default: half the peak")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds, args.users, args.rate_users = 3.0, 1, 3000, 3000
        args.events_per_user, args.tail = 10, 1000
    phases = args.phases.split(",")
    import streamscore

    results: dict[str, Any] = {
        "package": streamscore.__file__,
        "argv": sys.argv[1:],
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "rate" in phases:
            results["rate"] = rate_phase(args, work)
        checkpoints = cols = proc = None
        if {"memory", "restart", "api"} & set(phases):
            results["memory"], checkpoints, cols = memory_phase(args)
        if {"restart", "api"} & set(phases):
            results["restart"], proc = restart_phase(args, work, checkpoints, cols)
        if "api" in phases and proc is not None:
            half = args.half_rate or (
                0.5 * float(np.median(results["rate"]["events_per_s_on"]))
                if "rate" in results
                else 5000.0
            )
            try:
                results["api"] = api_phase(args, proc, half)
            finally:
                proc.stop()
        elif proc is not None:
            proc.stop()
    day = datetime.date.today().isoformat()
    out = (
        args.out
        or ROOT / "bench" / "results" / f"features-{day}{'-smoke' if args.smoke else ''}.json"
    )
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
