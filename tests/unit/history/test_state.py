"""Named state blobs on both stores: saved, replaced, read back after reopening."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamscore.store.base import Store, StoreUnavailable
from streamscore.store.open import open_store

from ...conftest import create_database, drop_database


def reopen(url: str) -> Store:
    """PostgreSQL frees a closed store's session lock a moment after the disconnect."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return open_store(url, 5.0)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_state_survives_reopening(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}" if kind == "sqlite" else create_database()
    try:
        store = open_store(url, 5.0)
        assert store.load_state("drift") is None
        store.save_state("drift", b"one")
        store.save_state("drift", b"\x00two")
        store.save_state("features", b"x" * 100_000)
        store.close()
        store = reopen(url)
        assert store.load_state("drift") == b"\x00two"
        assert store.load_state("features") == b"x" * 100_000
        store.close()
    finally:
        if kind == "postgresql":
            drop_database(url)
