"""Real servers for tests: `streamscore serve` in a subprocess on 127.0.0.1, on a temp store."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
import psycopg
import pytest

from streamscore.scoring.model import create_model

POSTGRES = os.environ.get("STREAMSCORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
STORES = ["sqlite", "postgresql"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database() -> str:
    """A new, empty PostgreSQL database on the local server; returns its URL."""
    name = f"streamscore_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return POSTGRES.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


class Server:
    """One `streamscore serve` process; `restart()` keeps the store, so state must be recovered.

    `store_kind` "postgresql" gives the server a database of its own; `drop()` removes it.
    """

    def __init__(self, store_dir: Path, store_kind: str = "sqlite", **options: object) -> None:
        self.store_dir = store_dir
        self.store_kind = store_kind
        self.options: dict[str, object] = {"store": f"sqlite:///{store_dir / 'events.db'}"}
        if store_kind == "postgresql":
            # The demo model where a SQLite store would have it, so tests find it alike.
            self.options = {
                "store": create_database(),
                "model": create_model(store_dir / "demo_model.pt"),
            }
        self.options.update(options)
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

    def query(self, sql: str) -> list[tuple]:
        """Run `sql` (no parameters) straight on the server's store; its rows, if any."""
        store = str(self.options["store"])
        if self.store_kind == "postgresql":
            with psycopg.connect(store) as conn:
                cursor = conn.execute(sql)  # type: ignore[arg-type]
                return cursor.fetchall() if cursor.description else []
        with sqlite3.connect(store.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchall()

    def drop(self) -> None:
        """Kill the process if it runs, and remove a PostgreSQL database."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.store_kind == "postgresql":
            drop_database(str(self.options["store"]))


@contextmanager
def store_lock(server: Server) -> Iterator[None]:
    """Another writer holds the server's event log locked for the duration."""
    if server.store_kind == "postgresql":
        with psycopg.connect(str(server.options["store"])) as conn:  # a transaction until exit
            conn.execute("LOCK TABLE batches IN ACCESS EXCLUSIVE MODE")
            yield
            conn.rollback()
        return
    lock = sqlite3.connect(server.store_dir / "events.ingest.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over both stores; it passes `store_kind=` to `server_factory`."""
    return request.param


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type]:
    started: list[Server] = []

    def make(subdir: str = "store", store_kind: str = "sqlite", **options: object) -> Server:
        store = tmp_path / subdir
        store.mkdir(exist_ok=True)
        server = Server(store, store_kind, **options)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.drop()


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


def history_rows(client: httpx.Client, user: str, page: int) -> list[tuple[float, float]]:
    """A user's whole history as (timestamp, score), read `page` rows at a time via cursors."""
    rows: list[tuple[float, float]] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": page}
        if cursor:
            params["cursor"] = cursor
        response = client.get(f"/users/{user}/history", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        rows += [(p["timestamp"], p["score"]) for p in body["history"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
