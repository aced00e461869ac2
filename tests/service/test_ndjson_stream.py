"""A long NDJSON body streams through in chunks: all of it is stored, none of it is held whole."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import wait_until

# Run alone (scripts/test): it measures the server's peak memory.
pytestmark = pytest.mark.serial

USERS = 500


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise KeyError("VmHWM")


def ndjson(lines: int, start: float, counter: list[int]) -> Iterator[bytes]:
    """`lines` events, 0.02 s apart from `start`, sent as 5,000-line chunks."""
    for first in range(0, lines, 5000):
        chunk = b"".join(
            b'{"user_id":"user-%03d","timestamp":%.2f,"features":[0.25,-1.5,3.0]}\n'
            % (i % USERS, start + i * 0.02)
            for i in range(first, min(first + 5000, lines))
        )
        counter[0] += len(chunk)
        yield chunk


def post(client: httpx.Client, lines: int, start: float) -> int:
    sent = [0]
    r = client.post(
        "/ingest",
        content=ndjson(lines, start, sent),
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["processed"] == lines and r.json()["rejected"] == 0
    return sent[0]


def test_long_chunked_ndjson_body(server_factory) -> None:  # type: ignore[no-untyped-def]
    # Indexing is held off so the page cache of the history index does not blur the measurement,
    # and so are feature checkpoints: one falling inside the measured body raised the peak by
    # 18-22 MB on a slower machine (it passes with them held off or with --features off), a
    # cost of checkpoints that this test of the body's streaming does not measure.
    server = server_factory(
        index_interval=3600, max_index_lag=10_000_000, features_checkpoint_every=3600
    )
    pid = server.proc.pid
    start = time.time() - 60_000
    with server.client(timeout=300) as client:
        # Steady state first: kernels compiled, caches and per-user state (features, SQLite
        # pages, allocator arenas) grown to what this stream needs; measured: they stop growing
        # after about a million events.
        post(client, 300_000, start)
        post(client, 1_200_000, start + 6_000)
        steady = peak_rss_kb(pid)
        sent = post(client, 1_200_000, start + 30_000)
        grown = (peak_rss_kb(pid) - steady) * 1024
        assert client.get("/stats").json()["event_count"] == 2_700_000
    # Another 91 MB body left the peak where it was (give or take): it was never held whole.
    assert sent > 90_000_000
    assert grown < 16 * 2**20, (steady, grown, sent)
    server.restart()  # shutdown indexes everything still in the log
    with server.client() as client:
        per_user = 2_700_000 // USERS
        assert wait_until(
            lambda: (
                len(
                    client.get("/users/user-007/history", params={"limit": 10_000}).json()[
                        "history"
                    ]
                )
                == per_user
            )
        )
