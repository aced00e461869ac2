"""Pick the store named by the `--store` URL."""

from __future__ import annotations

from pathlib import Path

from streamscore.store.base import Store
from streamscore.store.postgres import PostgresStore
from streamscore.store.sqlite import SQLiteStore

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def sqlite_path(url: str) -> Path | None:
    """The history file of a `sqlite:///PATH` URL, or None for another kind of store."""
    return Path(url[len(SQLITE_PREFIX) :]) if url.startswith(SQLITE_PREFIX) else None


def open_store(url: str, timeout: float, indexer: bool = False) -> Store:
    """The store of a `sqlite:///PATH` or `postgresql://...` URL; ValueError for anything else.

    `indexer`: for the indexing process, beside the service's own store (PostgreSQL then takes
    neither the single-instance lock nor the writer's connection; SQLite needs no change)."""
    path = sqlite_path(url)
    if path is not None:
        return SQLiteStore(path, timeout=timeout)
    if url.startswith(POSTGRES_PREFIXES):
        return PostgresStore(url, timeout=timeout, indexer=indexer)
    raise ValueError(
        f"unsupported store URL {url!r}: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    )
