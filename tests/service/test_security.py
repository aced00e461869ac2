"""API keys, per-key rate limits, dead letters and slow clients, on a real server."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from ..conftest import Server, wait_until
from .test_reliability import samples

# Run alone (scripts/test): it times header and body cut-offs.
pytestmark = pytest.mark.serial

NOW = time.time()


def batch(n: int, user: str = "u") -> dict:
    return {"events": [{"user_id": user, "timestamp": NOW, "features": [1, 2, 3]}] * n}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    store = tmp_path_factory.mktemp("secured")
    key_file = store / "keys.txt"
    key_file.write_text("# ops\nfile-key\n")
    server = Server(
        store, api_keys="alpha,beta", api_key_file=key_file, rate_limit=1000, rate_burst=1000
    ).start()
    yield server
    server.stop()


def test_ingest_refusals_are_counted_and_other_methods_get_405(secured: Server) -> None:
    """`POST /ingest` is answered below the framework (`api.fast_path`): its latency and
    refused keys are still counted, and other methods still get the framework's 405."""

    def counts(client: httpx.Client) -> tuple[float, float]:
        got = samples(client.get("/metrics").text)
        refused = ("streamscore_refusals_total", (("reason", "unauthenticated"),))
        timed = (
            "streamscore_request_duration_seconds_count",
            (("endpoint", "/ingest"), ("status", "401")),
        )
        return got.get(refused, 0.0), got.get(timed, 0.0)

    with secured.client() as client:
        before = counts(client)
        assert client.post("/ingest", json=batch(1)).status_code == 401
        assert counts(client) == (before[0] + 1, before[1] + 1)
        r = client.get("/ingest")
        assert r.status_code == 405 and r.headers["allow"] == "POST", r.text


def test_writes_need_a_valid_key(secured: Server) -> None:
    with secured.client() as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "alpha"}):
            r = client.post("/ingest", json=batch(1), headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert client.get("/dead-letters", headers=headers).status_code == 401
        for key in ("alpha", "beta", "file-key"):
            r = client.post("/ingest", json=batch(1), headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
        # Reads stay open unless --auth-reads is set.
        assert client.get("/users/u/median").json()["count"] == 3
    assert "alpha" not in secured.log() and "file-key" not in secured.log()


def test_rate_limit_per_key(secured: Server) -> None:
    with secured.client() as client:
        beta = {"authorization": "Bearer beta"}
        assert client.post("/ingest", json=batch(900, "rl"), headers=beta).status_code == 200
        r = client.post("/ingest", json=batch(900, "rl"), headers=beta)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # Another key has its own bucket; the refused batch stored nothing.
        alpha = {"authorization": "Bearer alpha"}
        assert client.post("/ingest", json=batch(900, "rl"), headers=alpha).status_code == 200
        assert client.get("/users/rl/median").json()["count"] == 1800


def test_auth_reads(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(api_keys="k", auth_reads=True)
    with server.client() as client:
        for path in ("/users/u/median", "/users/u/history", "/stats"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"authorization": "Bearer k"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_dead_letters_keep_reason_raw_event_and_time(server_factory, store_kind: str) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(store_kind=store_kind, dead_letter_limit=5)
    started = time.time()
    bad = [
        {"user_id": "", "timestamp": NOW, "features": [1, 2, 3]},
        {"user_id": "x", "timestamp": 5, "features": [1, 2, 3]},
    ]
    with server.client() as client:
        client.post("/ingest", json={"events": [*bad, batch(1)["events"][0]]})
        letters = wait_until(lambda: client.get("/dead-letters").json()["dead_letters"])
        assert [(d["index"], d["error"]) for d in letters] == [
            (0, "Expected `str` of length >= 1 at `user_id`"),
            (1, "timestamp is before 2000-01-01T00:00:00Z"),
        ]
        assert '"user_id":""' in letters[0]["raw"].replace(" ", "")
        assert '"timestamp":5' in letters[1]["raw"]
        assert all(started - 1 <= d["received_at"] <= time.time() for d in letters)
        # Retention: only the newest `dead_letter_limit` are kept.
        client.post("/ingest", json={"events": [bad[0]] * 12})
        assert wait_until(lambda: len(client.get("/dead-letters").json()["dead_letters"]) == 5)
        later = client.get("/dead-letters", params={"since": time.time() + 60}).json()
        assert later["dead_letters"] == []


def test_stalled_body_gets_408_and_frees_the_connection(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(body_timeout=1)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"events": ['
        )
        s.settimeout(10)
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/ingest", json=batch(1)).status_code == 200


def test_trickling_headers_are_cut_off(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(header_timeout=1)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(10)
        started = time.monotonic()
        s.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\n")  # ...and never the rest
        assert s.recv(4096) == b""  # closed by the server
        assert 0.5 < time.monotonic() - started < 5
    with httpx.Client(base_url=server.url) as client:  # a normal client is unaffected
        assert client.get("/health").status_code == 200
        time.sleep(1.5)  # idle keep-alive is not cut by the header deadline
        assert client.get("/health").status_code == 200
