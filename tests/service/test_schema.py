"""Each store creates its schema itself and refuses one written by a newer streamscore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamscore.store.postgres import SCHEMA_VERSION as POSTGRES_VERSION
from streamscore.store.sqlite import SCHEMA_VERSION as SQLITE_VERSION

from ..conftest import Server

KNOWN = {"sqlite": SQLITE_VERSION, "postgresql": POSTGRES_VERSION}

BUMP = {
    "sqlite": "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
    "postgresql": "UPDATE schema_version SET version = 99",
}


def test_a_newer_schema_is_refused_with_a_clear_error(
    tmp_path: Path, server_factory, store_kind: str
) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(store_kind=store_kind)
    with server.client() as client:  # the schema was created on the way up
        assert client.get("/users/u/history").json()["history"] == []
    server.stop()
    server.query(BUMP[store_kind])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamscore",
            "serve",
            "--store",
            str(server.options["store"]),
            "--model",
            str(tmp_path / "store" / "demo_model.pt"),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    known = KNOWN[store_kind]
    assert "schema version 99" in result.stderr and f"knows {known}" in result.stderr
    server.query(BUMP[store_kind].replace("99", str(known)))  # the version this release knows
    server.start()  # the version it knows starts again, data intact
