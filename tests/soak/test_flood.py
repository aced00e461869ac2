"""Overload: a 30 s flood at five times capacity or more is shed with 503 + Retry-After,
memory stays bounded, nothing acknowledged is lost, and the service serves normally after."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from ..conftest import Server

# Run alone (scripts/test): it measures the server's memory under a flood.
pytestmark = pytest.mark.serial

RSS_BOUND_MB = 2048  # documented in the README's Guarantees section


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


class Flood:
    """Keep-alive connections that each send one prebuilt request after another, as fast as the
    service answers: a client this lean offers many times what the service can make durable,
    even on the two cores it shares with the service."""

    def __init__(self, port: int, events: int) -> None:
        now = time.time()
        body = msgspec.json.encode(
            {
                "events": [
                    {"user_id": f"flood-{i % 5000}", "timestamp": now, "features": [0.1, 0.2, 0.3]}
                    for i in range(events)
                ]
            }
        )
        head = "POST /ingest HTTP/1.1\r\nHost: flood\r\nContent-Type: application/json\r\n"
        self.request = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.port = port
        self.events = events
        self.sent = self.processed = 0
        self.statuses: Counter[int] = Counter()
        self.retry_after_missing = 0
        self.slowest = 0.0  # seconds, the longest wait for an answer

    async def _connection(self, deadline: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        while time.monotonic() < deadline:
            asked = time.monotonic()
            writer.write(self.request)
            await writer.drain()
            self.sent += self.events
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            self.slowest = max(self.slowest, time.monotonic() - asked)
            status = int(head.split(" ", 2)[1])
            length = int(re.search(r"content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            body = await reader.readexactly(length)
            self.statuses[status] += 1
            if status == 200:
                self.processed += json.loads(body)["processed"]
            elif status == 503 and "retry-after:" not in head:
                self.retry_after_missing += 1
        writer.close()

    def run(self, seconds: float, connections: int) -> float:
        """Flood for `seconds`; returns the events offered per second: sent within the flood,
        whose last answers may come after it (up to `--max-wait` later)."""

        async def main() -> None:
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(self._connection(deadline) for _ in range(connections)))

        asyncio.run(main())
        return self.sent / seconds


def test_flood_is_shed_without_losing_acknowledged_events(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory()  # the defaults: the README's bound is what users get
    capacity = generate(server, 3)["events_per_second"]  # durable events/s, measured now
    flood = Flood(server.port, events=25_000)
    offered = flood.run(
        seconds=30, connections=768
    )  # under --max-connections (1000); max_wait (5 s) holds each
    print(
        f"capacity {capacity:.0f}/s, offered {offered:.0f}/s, statuses {flood.statuses}, "
        f"slowest answer {flood.slowest:.1f} s, peak RSS {peak_rss_mb(server.proc.pid):.0f} MB"
    )
    assert offered >= 5 * capacity, f"offered {offered:.0f}/s, capacity {capacity:.0f}/s"
    assert set(flood.statuses) <= {200, 503} and flood.statuses[503] > 0, flood.statuses
    assert flood.retry_after_missing == 0
    assert peak_rss_mb(server.proc.pid) < RSS_BOUND_MB

    # Serves normally right after: the first answer may wait for the work already admitted
    # (--max-in-flight events, about five seconds of it), the next ones do not.
    body = {"events": [{"user_id": "after", "timestamp": time.time(), "features": [1, 2, 3]}]}
    with server.client() as client:
        started = time.perf_counter()
        assert client.post("/ingest", json=body).status_code == 200
        first = time.perf_counter() - started
        started = time.perf_counter()
        assert client.post("/ingest", json=body).status_code == 200
        second = time.perf_counter() - started
    print(f"after the flood: first answer {first:.2f} s, second {second:.3f} s")
    assert first < 15 and second < 1, (first, second)

    server.stop()  # indexes everything
    # Every acknowledged flood event is stored, once; nothing refused is.
    ((stored,),) = server.query("SELECT count(*) FROM events WHERE user_id LIKE 'flood-%'")
    assert stored == flood.processed > 0
