"""History is chunked by a process of its own: it does the work, it is restarted when it dies
without losing an acknowledged event, and it does not outlive a killed service."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ..conftest import Server, history_rows, wait_until


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc, as `pgrep -P` does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it exited meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def indexing_process(server: Server) -> int:
    assert server.proc is not None
    for pid in children(server.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            return pid
    raise AssertionError("no indexing process")


def ingest(server: Server, first: int, n: int) -> None:
    events = [
        {"user_id": f"u{i % 7}", "timestamp": 1_700_000_000 + i, "features": [1, 2, 3]}
        for i in range(first, first + n)
    ]
    with server.client() as client:
        assert client.post("/ingest", json={"events": events}).json()["processed"] == n


def chunked(server: Server) -> int:
    return int(server.query("SELECT coalesce(sum(count), 0) FROM history_chunks")[0][0])


def all_history(server: Server) -> list[float]:
    with server.client() as client:
        rows = [ts for u in range(7) for ts, _ in history_rows(client, f"u{u}", 10_000)]
    return sorted(rows)


def test_a_killed_indexing_process_is_restarted_and_nothing_is_lost(
    server_factory, store_kind: str
) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(store_kind=store_kind, index_interval=0.05)
    first = indexing_process(server)
    assert first != server.proc.pid
    ingest(server, 0, 300)
    assert wait_until(lambda: chunked(server) == 300), "the process chunks what is logged"
    os.kill(first, signal.SIGKILL)
    ingest(server, 300, 300)  # acknowledged while no process indexes
    assert wait_until(lambda: chunked(server) == 600, timeout=30), server.log()
    second = indexing_process(server)
    assert second != first
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert "streamscore_indexer_restarts 1.0" in metrics
    assert "streamscore_indexer_up 1.0" in metrics
    assert all_history(server) == [1_700_000_000.0 + i for i in range(600)]


def test_a_killed_service_leaves_no_indexing_process(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(index_interval=0.05)
    child = indexing_process(server)
    ingest(server, 0, 100)
    server.kill()

    def gone() -> bool:
        try:
            return Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    assert wait_until(gone, timeout=5), "the indexing process outlived the service"
    server.start()
    assert wait_until(lambda: chunked(server) == 100)
    assert all_history(server) == [1_700_000_000.0 + i for i in range(100)]


def test_a_graceful_stop_chunks_everything_logged(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(store_kind=store_kind, index_interval=3600)
    ingest(server, 0, 200)  # logged; the process would only index it within the hour
    time.sleep(0.2)
    server.stop()
    assert chunked(server) == 200
