"""What `Client` and `AsyncClient` hold and prepare alike; they differ only in their I/O."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from streamscore.client import calls
from streamscore.client.ids import EventIds
from streamscore.client.retry import RetryPolicy
from streamscore.client.types import IngestResult


class ClientBase(ABC):
    """The options of both clients (documented on `Client`) and the ingest requests they imply."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_for: float = 60.0,
        batch_size: int = 1000,
        linger: float = 0.05,
        event_id_prefix: str | None = None,
        max_errors: int = 1000,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._connect(url, headers, timeout)
        self.retry = RetryPolicy(total=retry_for)
        self.batch_size = batch_size
        self.linger = linger
        self.ids = EventIds(event_id_prefix)
        self.max_errors = max_errors

    @abstractmethod
    def _connect(self, url: str, headers: dict[str, str], timeout: float) -> None:
        """Open the HTTP connection pool, blocking or asyncio."""

    def _ingest_calls(
        self, events: Sequence[Any]
    ) -> Iterator[tuple[int, calls.Call[IngestResult]]]:
        """`ingest`'s requests with the index of their first event; ids are given as each is made."""
        for start in range(0, len(events), self.batch_size):
            batch = list(events[start : start + self.batch_size])
            self.ids.assign(batch)
            yield start, calls.ingest_json(batch)

    def _stream_call(self, batch: list[Any]) -> calls.Call[IngestResult]:
        """One `ingest_stream` batch's request, ids given first."""
        self.ids.assign(batch)
        return calls.ingest_ndjson(batch)

    def _batching(self, batch_size: int | None, linger: float | None) -> tuple[int, float]:
        """`ingest_stream`'s batch size and linger: the arguments, else the client's defaults."""
        return batch_size or self.batch_size, self.linger if linger is None else linger
