"""The asyncio client: the same calls and guarantees as `Client`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any, TypeVar

import httpx

from streamscore.client import calls
from streamscore.client.base import ClientBase
from streamscore.client.stream import abatches
from streamscore.client.types import Features, HistoryPoint, IngestResult, Median, Stats

T = TypeVar("T")


class AsyncClient(ClientBase):
    """`Client` for asyncio; the options and their meaning are the same."""

    def _connect(self, url: str, headers: dict[str, str], timeout: float) -> None:
        self._http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ingest(self, events: Sequence[Any]) -> IngestResult:
        total = IngestResult.empty()
        for start, call in self._ingest_calls(events):
            total.add(await self._run(call), start, self.max_errors)
        return total

    async def ingest_stream(
        self,
        events: AsyncIterable[Any] | Iterable[Any],
        batch_size: int | None = None,
        linger: float | None = None,
    ) -> IngestResult:
        """As `Client.ingest_stream`; a plain iterable must not block the event loop."""
        total = IngestResult.empty()
        offset = 0
        async for batch in abatches(events, *self._batching(batch_size, linger)):
            total.add(await self._run(self._stream_call(batch)), offset, self.max_errors)
            offset += len(batch)
        return total

    async def median(self, user_id: str) -> Median:
        return await self._run(calls.median(user_id))

    async def history(
        self,
        user_id: str,
        since: float | None = None,
        until: float | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[HistoryPoint]:
        cursor: str | None = None
        while True:
            page = await self._run(calls.history_page(user_id, since, until, page_size, cursor))
            for point in page.history:
                yield point
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def stats(self) -> Stats:
        return await self._run(calls.stats())

    async def features(
        self, user_id: str, version: str | None = None, names: Sequence[str] | None = None
    ) -> Features:
        return await self._run(calls.features(user_id, version, names))

    async def lookup(
        self,
        users: Sequence[str],
        names: Sequence[str] | None = None,
        version: str | None = None,
    ) -> list[Features]:
        return (await self._run(calls.lookup(users, names, version))).users

    async def _run(self, call: calls.Call[T]) -> T:
        attempts = calls.Attempts(self.retry)
        while True:
            try:
                answer: httpx.Response | httpx.TransportError = await self._http.request(
                    **call.request()
                )
            except httpx.TransportError as exc:
                answer = exc
            step = attempts.settle(call, answer)
            if not isinstance(step, calls.Retry):
                return step
            await asyncio.sleep(step.delay)
