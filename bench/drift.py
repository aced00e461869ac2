"""What drift monitoring costs: durable ingest with `--drift true` against `--drift false`, in
the same run, alternating, each on a fresh SQLite store (issue target: on ≥ 95 % of off).

    .venv/bin/python -m bench.drift            # 3 rounds of 15 s each way; bench/results/drift-DATE.json
    .venv/bin/python -m bench.drift --smoke    # seconds; checks that it runs and reports
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.run import generate, save_result, serve

GEN = {"concurrency": 16, "batch_size": 500, "users": 10_000}


def rate(work: Path, drift: bool, seconds: float, round_: int) -> float:
    store = work / f"{'on' if drift else 'off'}-{round_}.db"
    server = serve(store, work / "server.log", "--drift", str(drift).lower())
    try:
        generate(server.url, 2, **GEN)  # warm-up: kernels compiled, references collected
        return float(generate(server.url, seconds, **GEN)["events_per_second"])
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds = 1, 2.0
    on: list[float] = []
    off: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            off.append(rate(Path(tmp), False, args.seconds, r))
            on.append(rate(Path(tmp), True, args.seconds, r))
            print(
                f"[bench.drift] round {r}: off {off[-1]:,.0f} on {on[-1]:,.0f} ev/s",
                file=sys.stderr,
            )
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.drift" + (" --smoke" if args.smoke else ""),
        "generator": GEN,
        "seconds": args.seconds,
        "drift_off_eps": off,
        "drift_on_eps": on,
        "ratio_of_medians": float(np.median(on) / np.median(off)),
    }
    save_result("drift", result, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
