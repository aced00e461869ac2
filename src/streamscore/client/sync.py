"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import httpx

from streamscore.client import calls
from streamscore.client.base import ClientBase
from streamscore.client.stream import batches
from streamscore.client.types import Features, HistoryPoint, IngestResult, Median, Stats

T = TypeVar("T")


class Client(ClientBase):
    """A streamscore service at `url`.

    Every call retries 429, 502, 503, 504, connection errors and timeouts for up to
    `retry_for` seconds in total (the server's `Retry-After`, else jittered exponential
    backoff), then raises `RetriesExhausted`; other 4xx raise at once. `timeout` bounds each
    attempt. Events without an `event_id` get one before their first attempt (see
    `streamscore.client.ids`), so retries are never counted twice. `batch_size` and `linger`
    are the defaults of `ingest` and `ingest_stream`.
    """

    def _connect(self, url: str, headers: dict[str, str], timeout: float) -> None:
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ingest(self, events: Sequence[Any]) -> IngestResult:
        """Score and store `events` (dicts or `Event`s), in requests of `batch_size` as JSON.

        Rejected events come back in `errors` with their index in `events`.
        """
        total = IngestResult.empty()
        for start, call in self._ingest_calls(events):
            total.add(self._run(call), start, self.max_errors)
        return total

    def ingest_stream(
        self, events: Iterable[Any], batch_size: int | None = None, linger: float | None = None
    ) -> IngestResult:
        """Send an iterable of events, unbounded if need be, as NDJSON requests of up to
        `batch_size` events, each sent once its first event has waited `linger` seconds.

        Each batch is one request, retried alone; error indices count from the stream's start.
        """
        total = IngestResult.empty()
        offset = 0
        for batch in batches(events, *self._batching(batch_size, linger)):
            total.add(self._run(self._stream_call(batch)), offset, self.max_errors)
            offset += len(batch)
        return total

    def median(self, user_id: str) -> Median:
        return self._run(calls.median(user_id))

    def history(
        self,
        user_id: str,
        since: float | None = None,
        until: float | None = None,
        page_size: int = 1000,
    ) -> Iterator[HistoryPoint]:
        """The user's scored events with `since <= timestamp <= until`, oldest first, fetched
        page by page as the iterator advances."""
        cursor: str | None = None
        while True:
            page = self._run(calls.history_page(user_id, since, until, page_size, cursor))
            yield from page.history
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def stats(self) -> Stats:
        return self._run(calls.stats())

    def features(
        self, user_id: str, version: str | None = None, names: Sequence[str] | None = None
    ) -> Features:
        """The user's current features (`GET /users/{id}/features`), all or only `names`."""
        return self._run(calls.features(user_id, version, names))

    def lookup(
        self,
        users: Sequence[str],
        names: Sequence[str] | None = None,
        version: str | None = None,
    ) -> list[Features]:
        """Features of many users at once (`POST /features/lookup`), in the order of `users`."""
        return self._run(calls.lookup(users, names, version)).users

    def _run(self, call: calls.Call[T]) -> T:
        attempts = calls.Attempts(self.retry)
        while True:
            try:
                answer: httpx.Response | httpx.TransportError = self._http.request(**call.request())
            except httpx.TransportError as exc:
                answer = exc
            step = attempts.settle(call, answer)
            if not isinstance(step, calls.Retry):
                return step
            time.sleep(step.delay)
