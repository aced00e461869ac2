"""A long NDJSON body streams through in chunks: all of it is stored, none of it is held whole."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from .conftest import wait_until

LINES = 1_000_000


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_long_chunked_ndjson_body(server_factory) -> None:  # type: ignore[no-untyped-def]
    # Indexing is held off so the SQLite page cache of the history index does not blur the
    # measurement of what the request itself holds.
    server = server_factory(index_interval=3600)
    pid = server.proc.pid
    start = time.time() - 20_000
    template = msgspec.json.encode(
        {"user_id": "user-000", "timestamp": 1.0, "features": [0.25, -1.5, 3.0]}
    )
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        lines = []
        for i in range(LINES):
            line = template.replace(b"user-000", b"user-%03d" % (i % 500)).replace(
                b'"timestamp":1.0', b'"timestamp":%.2f' % (start + i * 0.02)
            )
            lines.append(line)
            if len(lines) == 5000:
                chunk = b"\n".join(lines) + b"\n"
                sent += len(chunk)
                yield chunk
                lines = []

    with server.client(timeout=300) as client:
        # Warm up first: the first batches compile kernels and grow torch's allocator.
        warm = template.replace(b'"timestamp":1.0', b'"timestamp":%.2f' % start)
        warmup = b"\n".join(warm.replace(b"user-000", b"warm") for _ in range(20_000))
        client.post("/ingest", content=warmup, headers={"content-type": "application/x-ndjson"})
        before = memory_kb(pid, "VmRSS")
        r = client.post("/ingest", content=body(), headers={"content-type": "application/x-ndjson"})
        peak = memory_kb(pid, "VmHWM")
        assert r.status_code == 200, r.text
        assert r.json()["processed"] == LINES and r.json()["rejected"] == 0
        assert client.get("/stats").json()["event_count"] == LINES + 20_000
    assert sent > 70_000_000
    # The body is over 70 MB; the server's peak grew by a fraction of it (window + caches).
    assert (peak - before) * 1024 < sent / 2, (before, peak, sent)
    server.restart()  # the drain on shutdown indexes everything
    with server.client() as client:
        rows = wait_until(
            lambda: len(client.get("/users/user-007/history", params={"limit": 5000}).json()["history"])
            == LINES // 500
        )
        assert rows
