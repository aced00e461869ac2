"""Issue 13 on real servers: each test fails on the code before the fix (see the report)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Server, free_port, store_lock, wait_until


def event(user: str = "u", ts: float | None = None, **extra: object) -> dict:
    return {
        "user_id": user,
        "timestamp": time.time() if ts is None else ts,
        "features": [1, 2, 3],
    } | extra


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def stored(server: Server, event_id: str) -> int:
    return server.query(f"SELECT count(*) FROM events WHERE event_id = '{event_id}'")[0][0]


# -- 1: a copy of an in-flight id waits for the original's outcome ------------------------------


def test_copy_of_a_failed_original_is_processed_not_acknowledged_as_duplicate(
    server_factory, store_kind: str
) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind=store_kind, store_timeout=1.0)
    body = {"events": [event("dup", event_id="only-once")]}
    answers: dict[str, httpx.Response] = {}

    def post(name: str) -> None:
        with server.client() as client:
            answers[name] = client.post("/ingest", json=body)

    with store_lock(server):
        original = threading.Thread(target=post, args=("original",))
        original.start()
        time.sleep(0.3)  # the original holds the claim, its write waits for the lock
        copy = threading.Thread(target=post, args=("copy",))
        copy.start()
        original.join()
    copy.join()
    assert answers["original"].status_code == 503
    # Before: the copy got 200 `duplicates: 1` at once, and nothing was ever stored.
    assert answers["copy"].status_code == 200, answers["copy"].text
    assert answers["copy"].json()["processed"] == 1
    assert answers["copy"].json()["duplicates"] == 0
    assert wait_until(lambda: stored(server, "only-once") == 1)
    with server.client() as client:
        assert client.post("/ingest", json=body).json()["duplicates"] == 1


# -- 13: a model failing one batch fails only that batch -----------------------------------------


class FailsOnNegative(torch.nn.Module):
    """Scores like a model, but raises for a batch holding a negative first feature."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] < 0).any()):
            raise RuntimeError("injected model failure")
        return self.linear(x).reshape(-1)


def test_a_failing_batch_answers_500_and_releases_its_ids(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "fails.pt"
    torch.jit.script(FailsOnNegative()).save(str(model))
    server: Server = server_factory(model=model)
    bad = {"user_id": "m", "timestamp": time.time(), "features": [-1, 2, 3], "event_id": "b1"}
    with server.client() as client:
        r = client.post("/ingest", json={"events": [bad]})
        assert r.status_code == 500, r.text
        ok = client.post("/ingest", json={"events": [event("m", event_id="g1")]})
        assert ok.status_code == 200 and ok.json()["processed"] == 1
        assert client.get("/ready").status_code == 200
        # The failed event's id was released: fixed, its retry is processed, not a duplicate.
        fixed = bad | {"features": [1, 2, 3]}
        assert client.post("/ingest", json={"events": [fixed]}).json()["processed"] == 1


# -- 4: one bad clock moves stream time by a tenth of the window at most ------------------------


def test_one_event_from_a_fast_clock_does_not_make_everything_late(server: Server) -> None:
    now = time.time()
    with server.client() as client:
        far = client.post("/ingest", json={"events": [event("clock", now + 299)]}).json()
        assert far["rejected"] == 1 and "ahead of the server clock" in far["errors"][0]["error"]
        near = client.post("/ingest", json={"events": [event("clock", now + 29)]}).json()
        assert near["processed"] == 1
        ordinary = client.post("/ingest", json={"events": [event("other", now - 240)]}).json()
        assert ordinary == ordinary | {"processed": 1, "late": 0}


# -- 5 and 6: bounded bytes, refusal before work, a responsive loop ------------------------------


def test_body_bytes_in_flight_are_bounded(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(max_wait=0.5)
    declared = 60 * 1024 * 1024  # under --max-body-bytes; five exceed the 256 MiB default
    stalled = []
    for _ in range(4):
        conn = socket.create_connection(("127.0.0.1", server.port))
        conn.sendall(
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % declared
        )
        stalled.append(conn)
    time.sleep(0.3)
    with server.client() as client:
        big = b'{"events":[' + b" " * (declared - 13) + b"]}"
        r = client.post("/ingest", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 503 and "body bytes" in r.json()["error"], r.text
        assert "retry-after" in r.headers
        assert client.post("/ingest", json={"events": [event()]}).status_code == 200
        for conn in stalled:
            conn.close()
        assert wait_until(
            lambda: (
                client.post(
                    "/ingest", content=big, headers={"content-type": "application/json"}
                ).status_code
                == 200
            )
        )


@pytest.mark.serial  # run alone (scripts/test): it times /health beside a costly body
def test_expensive_bodies_are_refused_first_and_do_not_stall_others(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(max_events_per_request=2_000_000, max_ndjson_bytes=50_000)
    empties = b'{"events":[' + b",".join([b"{}"] * 600_000) + b"]}"
    with server.client() as client:
        answer: dict[str, httpx.Response] = {}
        thread = threading.Thread(
            target=lambda: answer.setdefault("r", client.post("/ingest", content=empties))
        )
        slowest = 0.0
        thread.start()
        with server.client() as other:
            while thread.is_alive():
                started = time.perf_counter()
                assert other.get("/health").status_code == 200
                slowest = max(slowest, time.perf_counter() - started)
                time.sleep(0.02)
        thread.join()
        body = answer["r"].json()
        assert body["rejected"] == 600_000 and len(body["errors"]) == 100
        assert slowest < 0.2, f"/health took {slowest:.3f} s while a bad body was decoded"

        lines = b"\n".join(
            b'{"user_id":"nd","timestamp":%f,"features":[1,2,3]}' % time.time() for _ in range(2000)
        )
        r = client.post("/ingest", content=lines, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 413 and "NDJSON body exceeds" in r.json()["error"], r.text


def test_event_count_and_rate_are_checked_before_decoding(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(rate_limit=10, rate_burst=10)
    with server.client() as client:
        many = b'{"events":[' + b",".join([b"{}"] * 200_000) + b"]}"
        started = time.perf_counter()
        r = client.post("/ingest", content=many)
        assert r.status_code == 413 and time.perf_counter() - started < 1.0, r.text
        # Invalid events cost the key its tokens too: a flood of junk cannot bypass the limit.
        junk = {"events": [{}] * 10}
        assert client.post("/ingest", json=junk).status_code == 200
        assert client.post("/ingest", json=junk).status_code == 429


# -- 11: roles -----------------------------------------------------------------------------------

ENDPOINTS = [  # (method, path, scope)
    ("POST", "/ingest", "ingest"),
    ("GET", "/users/u/median", "read"),
    ("GET", "/users/u/history", "read"),
    ("GET", "/stats", "read"),
    ("GET", "/metrics", "read"),
    ("GET", "/batching", "read"),
    ("GET", "/batches/recent", "read"),
    ("GET", "/dead-letters", "admin"),
    ("POST", "/admin/profile", "admin"),
    ("POST", "/simulator/start", "admin"),
    ("POST", "/simulator/stop", "admin"),
]


def test_each_endpoint_refuses_a_key_without_its_scope(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_file = tmp_path / "keys"
    key_file.write_text("# comment\nreader read\nwriter ingest\nboss admin,read\n")
    server: Server = server_factory(
        api_keys="all,ing:ingest,rd:read+ingest", api_key_file=key_file, auth_reads=True
    )
    scopes = {
        "all": {"ingest", "read", "admin"},
        "ing": {"ingest"},
        "rd": {"read", "ingest"},
        "reader": {"read"},
        "writer": {"ingest"},
        "boss": {"admin", "read"},
    }
    with server.client() as client:
        for method, path, scope in ENDPOINTS:
            for key in (None, "unknown"):
                headers = {"authorization": f"Bearer {key}"} if key else {}
                assert client.request(method, path, headers=headers).status_code == 401, path
            for key, has in scopes.items():
                headers = {"authorization": f"Bearer {key}"}
                status = client.request(method, path, headers=headers).status_code
                assert (status != 403) == (scope in has), (path, key, status)
                assert status != 401, (path, key)


# -- 12: unsafe defaults, the simulator's namespace ----------------------------------------------


def serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamscore", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_no_keys_on_a_public_address_needs_insecure(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'e.db'}"
    result = serve("--host", "0.0.0.0", "--port", str(free_port()), "--store", store)
    assert result.returncode == 2
    assert result.stderr.startswith("streamscore serve: refusing") and "--insecure" in result.stderr


def test_real_events_may_not_use_the_simulator_namespace(server: Server) -> None:
    with server.client() as client:
        body = client.post("/ingest", json={"events": [event("sim:user-1"), event("user-1")]})
        assert body.json()["processed"] == 1
        assert body.json()["errors"] == [
            {"index": 0, "error": "user_id prefix 'sim:' is reserved for the simulator"}
        ]


# -- 16: SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_drains_then_exits_zero(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(shutdown_delay=1.5)
    with server.client() as client:
        slow = socket.create_connection(("127.0.0.1", server.port))  # an in-flight request
        body = b'{"events":[%s]}' % httpx.Request("POST", "/", json=event("late")).content
        slow.sendall(
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[:5]
        )
        time.sleep(0.2)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        r = client.post("/ingest", json={"events": [event()]})
        assert r.status_code == 503 and "retry-after" in r.headers, r.text
        assert "shutting down" in r.json()["error"]
        slow.sendall(body[5:])
        assert slow.recv(4096).startswith(b"HTTP/1.1 200")
        slow.close()
    assert server.proc.wait(30) == 0
    server.proc = None


def test_sigterm_turns_ready_503_at_once(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(shutdown_delay=1.0)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    with server.client() as client:
        r = client.get("/ready")
    assert r.status_code == 503 and "shutting down" in r.json()["problems"]


# -- 17: contract and start-up errors ------------------------------------------------------------


def test_stats_contract_before_and_after_the_first_event(server: Server) -> None:
    with server.client() as client:
        before = client.get("/stats").json()
        assert before["stream_time"] is None and before["events_processed"] == 0
        client.post("/ingest", json={"events": [event(), event()]})
        after = client.get("/stats").json()
        assert after["events_processed"] == 2 and after["stream_time"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--store", "mysql://x@127.0.0.1/db"], "unsupported store URL"),
        (["--store", f"postgresql://postgres@127.0.0.1:{free_port()}/x"], "PostgreSQL"),
        (["--batching", "eager"], "--batching must be adaptive or fixed"),
        (["--api-keys", "k:write"], "unknown API key scope 'write'"),
        (["--api-key-file", "/nonexistent/keys"], "--api-key-file"),
        (["--max-in-flight", "-5"], "--max-in-flight must be positive"),
        (["--window", "0"], "--window must be positive"),
        (["--rate-limit", "-1"], "--rate-limit must not be negative"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    base = ["--port", str(free_port()), "--store", f"sqlite:///{tmp_path / 'e.db'}"]
    result = serve(*base, *args)
    assert result.returncode == 2, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("streamscore serve:")]
    assert len(said) == 1 and message in said[0], result.stderr  # the rest: JSON log lines
    assert "Traceback" not in result.stderr


# -- 18: metrics -----------------------------------------------------------------------------


def test_metrics_by_status_and_refusal_reason(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(max_events_per_request=2, store_timeout=0.3)
    with server.client() as client:
        client.post("/ingest", json={"events": [event()]})
        client.post("/ingest", json={"events": [event()] * 3})
        client.post("/ingest", content=b"{", headers={"content-type": "application/json"})
        with store_lock(server):
            client.post("/ingest", json={"events": [event()]})
        got = samples(client.get("/metrics").text)

    def requests(status: str) -> float:
        return got[
            (
                "streamscore_request_duration_seconds_count",
                (("endpoint", "/ingest"), ("status", status)),
            )
        ]

    assert (requests("200"), requests("413"), requests("400"), requests("503")) == (1, 1, 1, 1)
    for reason in ("too_large", "bad_body", "store_unavailable"):
        assert got[("streamscore_refusals_total", (("reason", reason),))] == 1
    assert got[("streamscore_scoring_thread_up", ())] == 1
    assert got[("streamscore_commit_thread_up", ())] == 1
    assert got[("streamscore_dedupe_bytes", ())] >= 0
