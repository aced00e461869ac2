"""Fixtures on the real local NATS (JetStream) and Redis: each test gets a cluster of its own.

Nothing here skips: without a NATS server at NATS_URL the tests fail, as they should in CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from streamscore.cluster.bus import Cluster, delete_cluster, open_cluster

NATS_URL = os.environ.get("STREAMSCORE_TEST_NATS", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("STREAMSCORE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def connect(url: str = NATS_URL, **options: object) -> Client:
    return await nats.connect(url, **{"connect_timeout": 2, "allow_reconnect": False, **options})


@pytest.fixture
def cluster_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def cluster(cluster_name: str) -> AsyncIterator[Cluster]:
    nc = await connect()
    c = await open_cluster(nc, cluster_name, partitions=8)
    yield c
    await delete_cluster(c)
    await nc.close()


async def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.01) -> float:
    """Seconds until `check()` held; AssertionError after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateNats:
    """A nats-server of our own (JetStream, file store under a temp dir) that tests may stop."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("nats-server")
        assert binary is not None, "nats-server is not on PATH"
        self.proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    if shutil.which("nats-server") is None:
        pytest.skip("needs the nats-server binary to stop and restart a server of its own")
    server = PrivateNats(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()
