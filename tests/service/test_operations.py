"""Retention and profiling on a real server."""

from __future__ import annotations

import time
from pathlib import Path

from ..conftest import Server, wait_until

DAY = 86_400


def history_stamps(server: Server, user: str) -> list[float]:
    with server.client() as client:
        body = client.get(f"/users/{user}/history").json()
    return [p["timestamp"] for p in body["history"]]


def test_retention_deletes_old_history_in_the_background(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(store_kind=store_kind, retention=1, index_interval=0.05)
    now = time.time()
    old = [now - 3 * DAY + i for i in range(50)]
    recent = [now - i for i in range(50)]
    events = [
        {"user_id": f"r{i % 3}", "timestamp": ts, "features": [1, 2, 3]}
        for i, ts in enumerate(old + recent)
    ]
    with server.client() as client:
        assert client.post("/ingest", json={"events": events}).json()["processed"] == 100

    def metrics() -> str:
        with server.client() as client:
            return client.get("/metrics").text

    # The old rows were stored (the retention counter counts them) and then deleted. (Whether
    # a page sees them before the sweep depends on when it runs, so it is not asserted.)
    assert wait_until(lambda: "streamscore_retention_deleted_events 50.0" in metrics(), timeout=30)
    kept = sorted(ts for u in ("r0", "r1", "r2") for ts in history_stamps(server, u))
    assert kept == sorted(recent)


def test_admin_profile_returns_a_report(server: Server) -> None:
    event = {"user_id": "p", "timestamp": time.time(), "features": [1, 2, 3]}
    with server.client() as client:
        r = client.post("/admin/profile", params={"seconds": 0.5})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "pyinstrument" in r.text
        assert client.post("/ingest", json={"events": [event]}).status_code == 200
        assert client.post("/admin/profile", params={"seconds": 0}).status_code == 422


def test_profile_flag_writes_html_on_shutdown(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "profile.html"
    server = server_factory(profile=path)
    with server.client() as client:
        assert client.get("/stats").status_code == 200
        # One profile at a time: the whole-run profile is taking it.
        assert client.post("/admin/profile", params={"seconds": 0.1}).status_code == 409
    server.stop()
    assert "pyinstrument" in path.read_text()
