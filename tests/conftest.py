"""Real servers for tests: `streamscore serve` in a subprocess on 127.0.0.1, on a temp store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `streamscore serve` process; `restart()` keeps the store, so state must be recovered."""

    def __init__(self, store_dir: Path, **options: object) -> None:
        self.store_dir = store_dir
        self.options = {"store": f"sqlite:///{store_dir / 'events.db'}", **options}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir / "server.log"

    def start(self, timeout: float = 60.0) -> Server:
        args = [sys.executable, "-m", "streamscore", "serve", "--port", str(self.port)]
        for key, value in self.options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> Server:
        self.stop(sig)
        return self.start()

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type]:
    started: list[Server] = []

    def make(subdir: str = "store", **options: object) -> Server:
        store = tmp_path / subdir
        store.mkdir(exist_ok=True)
        server = Server(store, **options)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def server(server_factory) -> Server:  # type: ignore[no-untyped-def]
    return server_factory()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by a module's tests: they must not depend on each other's events."""
    server = Server(tmp_path_factory.mktemp("module")).start()
    yield server
    server.stop()


def wait_until(check, timeout: float = 15.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns a truthy value; history trails acks by the index interval."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


LONG = os.environ.get("STREAMSCORE_LONG") == "1"


def post_events(client: httpx.Client, events: list, ndjson: bool) -> dict:
    """POST events as one JSON body or as NDJSON lines; asserts a 200 and returns its body."""
    if ndjson:
        body = b"\n".join(msgspec.json.encode(e) for e in events)
        response = client.post(
            "/ingest", content=body, headers={"content-type": "application/x-ndjson"}
        )
    else:
        response = client.post("/ingest", json={"events": events})
    assert response.status_code == 200, response.text
    return response.json()
