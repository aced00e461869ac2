"""Issue 13 item 15: the shared local PostgreSQL restarts under load. Every acknowledged event
is stored once, the service serves again by itself, and it holds the single-instance lock again.

It restarts the server every other test uses, so it lives here, kept short, and leaves the
server running whatever happens.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import Server, wait_until
from ..service.test_postgres_faults import lock_holders

# Run alone (scripts/test): it restarts the PostgreSQL server every other test uses.
pytestmark = pytest.mark.serial

BATCH = 100


def cluster(action: str) -> subprocess.CompletedProcess[str]:
    (version,) = [p.name for p in Path("/etc/postgresql").iterdir()]
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        capture_output=True,
        text=True,
        timeout=60,
    )


class Load:
    """Threads posting batches of unique event ids, each retried until it is acknowledged."""

    def __init__(self, server: Server, threads: int = 3) -> None:
        self.server = server
        self.acked: list[str] = []
        self.refused = 0
        self.last_ok = 0.0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in range(threads)]

    def _run(self, thread: int) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            k = 0
            while not self.stop.is_set():
                ids = [f"t{thread}-b{k}-e{i}" for i in range(BATCH)]
                events = [
                    {"user_id": f"u{i % 7}", "timestamp": time.time(), "features": [1, 2, 3]}
                    | {"event_id": e}
                    for i, e in enumerate(ids)
                ]
                while True:  # a careful client: the same batch until it is acknowledged
                    try:
                        r = client.post("/ingest", json={"events": events})
                    except httpx.TransportError:
                        r = None
                    if r is not None and r.status_code == 200:
                        break
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.05)
                with self.lock:
                    self.acked += ids
                    self.last_ok = time.monotonic()
                k += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_a_postgres_restart_under_load_loses_nothing_acknowledged(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind="postgresql", store_timeout=2.0)
    url = str(server.options["store"])
    try:
        with Load(server) as load:
            assert wait_until(lambda: len(load.acked) >= 5 * BATCH, timeout=30)
            restart = cluster("restart")
            assert restart.returncode == 0, restart.stderr
            restarted = time.monotonic()
            # Serving again by itself: acknowledgements resume after the restart.
            assert wait_until(lambda: load.last_ok > restarted + 1, timeout=60), load.refused
    finally:
        if cluster("status").returncode != 0:
            cluster("start")
    # Before: the lock was lost with the restart and never taken back.
    assert len(lock_holders(url)) == 1
    server.stop()  # indexes everything
    acked = load.acked
    rows = server.query(
        "SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_id LIKE 't%'"
    )
    assert rows == [(len(acked), len(acked))], (rows, len(acked), load.refused)
