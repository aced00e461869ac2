"""Overload: a flood far past capacity is shed with 503 + Retry-After, memory stays bounded,
nothing acknowledged is lost, and the service serves normally afterwards."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from streamscore.generate.workload import event_id

from .conftest import LONG, Server

RSS_BOUND_MB = 1536  # documented in the README's Guarantees section


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


def generate(server: Server, seconds: float, *extra: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamscore",
            "generate",
            "--url",
            server.url,
            "--rps",
            "0",
            "--duration",
            str(seconds),
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_flood_is_shed_without_losing_acknowledged_events(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(max_in_flight=20_000, max_wait=0.01)
    capacity = generate(server, 3)["events_per_second"]
    record = tmp_path / "acks.jsonl"
    seconds = 30 if LONG else 8
    # Big requests make each refusal count for many events, so one 2-core machine running
    # both sides can offer several times what the service can make durable.
    flood = generate(
        server,
        seconds,
        "--batch-size",
        "25000",
        "--concurrency",
        "32",
        "--procs",
        "2",
        "--event-ids",
        "--record",
        str(record),
    )
    offered = flood["events_sent"] / flood["seconds"]
    print(f"capacity {capacity:.0f}/s, offered {offered:.0f}/s, errors {flood['errors']}")
    # The offered multiple of capacity varies with the machine (4.4-5.9x in the development
    # checkout, near 1x in a fresh clone); what is asserted is that the service was overloaded.
    assert flood["errors"].get("http_503", 0) > 0, "the flood really overloaded the service"
    assert set(flood["errors"]) <= {"http_503"}, flood["errors"]
    assert peak_rss_mb(server.proc.pid) < RSS_BOUND_MB

    # Serves normally right after.
    started = time.perf_counter()
    with server.client() as client:
        body = {"events": [{"user_id": "after", "timestamp": time.time(), "features": [1, 2, 3]}]}
        assert client.post("/ingest", json=body).status_code == 200
    assert time.perf_counter() - started < 2

    server.stop()  # indexes everything
    acked = [json.loads(line) for line in record.read_text().splitlines()]
    expected = {event_id(a["run_id"], a["first"] + i) for a in acked for i in range(a["count"])}
    assert len(expected) == flood["events_acked"]
    with sqlite3.connect(server.store_dir / "events.db") as db:
        stored = {
            r[0] for r in db.execute("SELECT event_id FROM history WHERE event_id IS NOT NULL")
        }
    assert expected <= stored, f"{len(expected - stored)} acknowledged events missing"
