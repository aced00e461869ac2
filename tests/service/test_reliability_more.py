"""Issue 13 leftovers on a real server: the simulator out of `median_of_medians`, a bounded
dead-letter buffer, a responsive loop under an all-invalid body. Each failed before the fix."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Server, wait_until

# Run alone (scripts/test): it measures the server's peak memory.
pytestmark = pytest.mark.serial


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_simulated_users_are_left_out_of_median_of_medians_unless_asked(
    server_factory,
) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(simulator_max_rps=20_000)
    with server.client() as client:
        run = {"rps": 2000, "duration_s": 0.5, "users": 20}
        assert client.post("/simulator/start", json=run).status_code == 200
        assert wait_until(lambda: not client.get("/simulator/status").json()["running"])
        real = {"user_id": "real", "timestamp": time.time(), "features": [1, 2, 3]}
        assert client.post("/ingest", json={"events": [real]}).json()["processed"] == 1
        median = client.get("/users/real/median").json()["median"]
        time.sleep(1.1)  # aggregates are at most one interval old
        stats = client.get("/stats").json()
        assert stats["users_tracked"] > 1  # the simulator's users are in the windows
        assert stats["median_of_medians"] == median  # ... not in the real users' aggregate
        every = client.get("/stats", params={"include_simulated": "true"}).json()
        assert every["median_of_medians"] != median


def peak_rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) // 1024


def test_an_all_invalid_body_costs_bounded_memory_and_is_counted_exactly(
    server_factory,
) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(max_events_per_request=2_000_000)
    assert server.proc is not None
    empties = b'{"events":[' + b",".join([b"{}"] * 600_000) + b"]}"
    before = peak_rss_mib(server.proc.pid)
    with server.client() as client:
        body = client.post("/ingest", content=empties).json()
        metrics = samples(client.get("/metrics").text)
    assert body["rejected"] == 600_000 and len(body["errors"]) == 100
    # Before: every rejection was materialised and buffered (+190 MiB here); now 1,000 are.
    grown = peak_rss_mib(server.proc.pid) - before
    assert grown < 100, f"peak RSS grew {grown} MiB"
    assert metrics[("streamscore_events_rejected_total", (("reason", "invalid_event"),))] == 600_000
    assert metrics[("streamscore_dead_letters_dropped", ())] >= 599_000
