"""What a model swap costs: re-scoring the windowed events (seconds per million), the pause of
the commit thread, and ingest latency just before and during the swap, under a steady load of
small requests below capacity (issue 15: no request waits more than the latency budget because
of a swap).

    .venv/bin/python -m bench.swap            # 1M windowed events; bench/results/swap-DATE.json
    .venv/bin/python -m bench.swap --smoke    # seconds; checks that it runs and reports
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.run import Proc, generate, quantiles_ms, save_result, serve
from streamscore.scoring.model import create_model


def post(port: int, path: str, body: bytes, content_type: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", path, body, {"content-type": content_type})
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"POST {path}: {response.status} {data[:300]!r}")
        return json.loads(data)
    finally:
        conn.close()


def steady_load(port: int, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """10-event requests one after another, 5 ms apart: (start, seconds) of each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    rng = np.random.default_rng(0)
    n = 0
    while not stop.is_set():
        events = [
            {"user_id": f"load-{(n + i) % 500}", "timestamp": time.time(), "features": row}
            for i, row in enumerate(rng.random((10, 3)).tolist())
        ]
        n += 10
        started = time.perf_counter()
        conn.request(
            "POST", "/ingest", json.dumps({"events": events}), {"content-type": "application/json"}
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        out.append((started, time.perf_counter() - started))
        time.sleep(0.005)
    conn.close()


def fill(server: Proc, windowed: int) -> float:
    """Ingest flat out until the windows hold `windowed` events; returns events/s."""
    started, sent = time.perf_counter(), 0
    while server.stats()["windowed_events"] < windowed:
        run = generate(server.url, 5, users=10_000, batch_size=500, concurrency=16, quiet=True)
        sent += run["events_acked"]
    return sent / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windowed", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.windowed = 20_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = serve(work / "events.db", work / "server.log", "--window", "3600")
        try:
            fill_rate = fill(server, args.windowed)
            windowed = server.stats()["windowed_events"]
            model = create_model(work / "m2.pt", seed=2)
            version = post(
                server.port, "/models?name=m2", model.read_bytes(), "application/octet-stream"
            )["version"]
            latencies: list[tuple[float, float]] = []
            stop = threading.Event()
            load = threading.Thread(target=steady_load, args=(server.port, stop, latencies))
            load.start()
            time.sleep(3.0)
            swap_start = time.perf_counter()
            swap = post(
                server.port,
                "/models/m2/activate",
                json.dumps({"version": version}).encode(),
                "application/json",
            )["swap"]
            swap_end = time.perf_counter()
            time.sleep(1.0)
            stop.set()
            load.join()
        finally:
            server.stop()
    before = [s for t, s in latencies if swap_start - 2.5 <= t < swap_start]
    during = [s for t, s in latencies if swap_start <= t <= swap_end + 0.5]
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.swap" + (" --smoke" if args.smoke else ""),
        "windowed_events": windowed,
        "fill_events_per_second": round(fill_rate),
        "swap": swap,
        "swap_wall_seconds": round(swap_end - swap_start, 3),
        "ingest_before_swap": quantiles_ms(before),
        "ingest_during_swap": quantiles_ms(during),
    }
    save_result("swap", result, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
