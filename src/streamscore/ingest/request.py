"""One ingest request after the HTTP layer: count, rate-limit, decode, validate, submit, tally.

Refusals come before the work they save: a JSON body's events are counted with a cheap
envelope pass (no typed objects) and checked against `max_events_per_request` and the key's
rate limit before the typed decode. Bodies over `OFF_LOOP_BYTES` are decoded in a worker
thread, `DECODE_SLICE` events per msgspec call: msgspec holds the GIL for a whole call, so a
call over the whole body would stall the event loop for as long, whatever thread runs it.
A body of a million `{}` thus delays no other request. The rate limit charges every event of a
body, valid or not. Body bytes count against admission's byte bound while they are buffered.

Rejections cost O(1) objects each beyond a fixed number: a request keeps the first
`MAX_LISTED_ERRORS` for its answer and the first `DEAD_LETTERS_PER_REQUEST` as dead letters;
the rest are only counted (by reason in the metrics, and as dropped dead letters).

JSON bodies arrive whole; NDJSON arrives as chunks and is processed `ndjson_chunk` lines at a
time while the body is still arriving, with one chunk in the pipeline and the next being read,
so an arbitrarily long body needs memory for two chunks only; its total size and duration are
bounded (`max_ndjson_bytes`, `max_ndjson_seconds`), and a refusal reports what was already
durable. The built-in simulator enters here too (`IngestRequest.json` with `simulated=True`),
so it goes through exactly what `POST /ingest` does, in its own user namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from streamscore.events import EventBatch, Rejection
from streamscore.ingest.decode import BodyError
from streamscore.ingest.ndjson import Lines, NdjsonFramer
from streamscore.ingest.validate import validate

if TYPE_CHECKING:
    from streamscore.service import Service

MAX_LISTED_ERRORS = 100
DEAD_LETTERS_PER_REQUEST = 1000  # rejected events of one request kept whole; the rest counted
OFF_LOOP_BYTES = 64 * 1024  # larger JSON bodies are decoded in a worker thread
DECODE_SLICE = 4096  # events per msgspec call (one GIL hold) when decoding off the loop

RateLimiter = Callable[[int], float]  # events -> seconds to wait (0: go)
MAX_IDEMPOTENCY_KEY = 200

# The request's `Idempotency-Key` header, for the code that stores its events: a cluster names
# the bus messages of events without an event_id after it, so that a retried request is stored
# once. A single node dedupes by event_id only (its client gives every event one).
idempotency_key: ContextVar[str | None] = ContextVar("idempotency_key", default=None)


class TooLarge(ValueError):
    """Answered with 413."""


class TooSlow(TimeoutError):
    """An NDJSON body still arriving after `max_ndjson_seconds`: 408."""


class _Envelope(msgspec.Struct):
    events: list[msgspec.Raw]  # a slice of the body per event: counted, not decoded


_envelope = msgspec.json.Decoder(_Envelope)


def count_events(body: bytes) -> int:
    """Events in a `{"events": [...]}` body, without decoding them; `BodyError` if none.

    >>> count_events(b'{"events": [{}, {"user_id": "a"}, 3]}')
    3
    """
    return len(raw_events(body))


def raw_events(body: bytes) -> list[msgspec.Raw]:
    """The body's events as undecoded slices of it; `BodyError` if there is no such list."""
    try:
        return _envelope.decode(body).events
    except msgspec.ValidationError as exc:
        raise BodyError(f'body must be an object with an "events" list: {exc}') from None
    except msgspec.DecodeError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from None


class RateLimited(RuntimeError):
    """The key's token bucket is empty: 429 with Retry-After."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after:.2f} s")
        self.retry_after = retry_after


def unlimited(events: int) -> float:
    return 0.0


class Rejects:
    """A request's rejections in bounded memory: the first `keep` whole, the rest by reason.

    >>> r = Rejects(keep=2)
    >>> r.add([Rejection(i, "bad", kind="k") for i in range(5)])
    >>> len(r.kept), r.total, dict(r.uncounted)
    (2, 5, {'k': 3})
    """

    def __init__(self, keep: int = DEAD_LETTERS_PER_REQUEST) -> None:
        self.keep = keep
        self.kept: list[Rejection] = []
        self.uncounted: Counter[str] = Counter()  # by kind: beyond `keep`
        self.total = 0

    def add(self, rejections: list[Rejection]) -> None:
        room = self.keep - len(self.kept)
        self.kept += rejections[: max(room, 0)]
        if len(rejections) > room:
            self.uncounted.update(r.kind for r in rejections[max(room, 0) :])
        self.total += len(rejections)


@dataclass
class Tally:
    """What a request came to so far; only the first `MAX_LISTED_ERRORS` rejections are kept."""

    processed: int = 0
    duplicates: int = 0
    late: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    rejected: int = 0
    dead_letters: int = 0  # rejections of this request handed to the dead letters so far

    def body(self) -> dict[str, object]:
        return {
            "processed": self.processed,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "late": self.late,
            "errors": [{"index": r.index, "error": r.error} for r in self.rejections],
            "errors_truncated": self.rejected > len(self.rejections),
        }


class IngestRequest:
    def __init__(
        self, service: Service, limiter: RateLimiter = unlimited, simulated: bool = False
    ) -> None:
        self.service = service
        self.limiter = limiter
        self.simulated = simulated
        self.tally = Tally()
        self.started = time.perf_counter()
        self.held_bytes = 0  # body bytes counted against admission's byte bound

    async def hold(self, n: int) -> None:
        """Count `n` more buffered body bytes (waits for room, or `Overloaded`)."""
        await self.service.admission.acquire_bytes(n)
        self.held_bytes += n

    def release(self) -> None:
        """Give back every byte held; call once the request is answered."""
        if self.held_bytes:
            self.service.admission.release_bytes(self.held_bytes)
            self.held_bytes = 0

    def finish(self) -> None:
        """Count the request (answered 200) in the service's counters."""
        counters = self.service.counters
        counters.ingest_requests += 1
        counters.ingest_latency.record(time.perf_counter() - self.started)

    async def json(self, body: bytes) -> None:
        """A whole `{"events": [...]}` body; raises what the route turns into 4xx/5xx."""
        if not body.strip():
            raise BodyError('empty body: expected {"events": [...]}')
        big = len(body) > OFF_LOOP_BYTES
        if not big:
            count = count_events(body)
        else:
            raws = await asyncio.to_thread(raw_events, body)
            count = len(raws)
        limit = self.service.settings.max_events_per_request
        if count > limit:
            raise TooLarge(
                f"{count} events exceed the limit of {limit} per JSON request; "
                "split it or use NDJSON"
            )
        self._rate_limit(count)
        if not big:
            batch, rejections = self.service.decoder.decode_json(body)
            await self._submit(batch, rejections)
            return
        del body  # the raw slices keep what is needed
        batch, rejects = await asyncio.to_thread(self._decode_slices, raws)
        del raws
        await self._submit(batch, rejects.kept)
        self._count_only(rejects.total - len(rejects.kept), rejects.uncounted)

    def _decode_slices(self, raws: list[msgspec.Raw]) -> tuple[EventBatch, Rejects]:
        """Decode `DECODE_SLICE` events per msgspec call (worker thread)."""
        decode = self.service.decoder.decode_lines
        batches, rejects = [], Rejects()
        for start in range(0, max(len(raws), 1), DECODE_SLICE):  # one empty batch at least
            part = raws[start : start + DECODE_SLICE]
            batch, bad = decode(list(zip(range(start, start + len(part)), part, strict=True)))
            batches.append(batch)
            rejects.add(bad)
        return EventBatch.concat(batches), rejects

    def _count_only(self, n: int, by_kind: Counter[str]) -> None:
        """Count `n` rejections not kept whole: by reason, and as dropped dead letters."""
        if not n:
            return
        self.tally.rejected += n
        self.service.counters.rejected += n
        self.service.dead_letters.skip(n)
        for kind, count in by_kind.items():
            self.service.metrics.rejected.labels(kind).inc(count)

    def _rate_limit(self, events: int) -> None:
        wait = self.limiter(events)
        if wait > 0:
            raise RateLimited(wait)

    async def ndjson(self, chunks: AsyncIterable[bytes]) -> None:
        """A streamed NDJSON body, processed chunk by chunk as it arrives."""
        settings = self.service.settings
        framer = NdjsonFramer(settings.max_line_bytes)
        lines: Lines = []
        rejections: list[Rejection] = []
        in_flight: asyncio.Future[None] | None = None

        async def flush() -> None:
            nonlocal lines, rejections, in_flight
            if lines:
                self._rate_limit(len(lines))
            batch, bad = self.service.decoder.decode_lines(lines) if lines else (None, [])
            pending = sorted(rejections + bad, key=lambda r: r.index)
            lines, rejections = [], []
            self.release()  # the chunk's bytes now live in the batch (counted as events)
            if in_flight is not None:
                await in_flight
                in_flight = None
            if batch is None:
                await self._reject(pending)
            else:
                in_flight = asyncio.ensure_future(self._submit(batch, pending))

        deadline = time.monotonic() + settings.max_ndjson_seconds
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > settings.max_ndjson_bytes:
                    raise TooLarge(
                        f"NDJSON body exceeds {settings.max_ndjson_bytes} bytes; "
                        "continue in a new request"
                    )
                if time.monotonic() > deadline:
                    raise TooSlow(
                        f"NDJSON body still arriving after {settings.max_ndjson_seconds:g} s; "
                        "continue in a new request"
                    )
                await self.hold(len(chunk))
                found, overlong = framer.feed(chunk)
                lines += found
                rejections += overlong
                if len(lines) >= settings.ndjson_chunk:
                    await flush()
            found, overlong = framer.close()
            lines += found
            rejections += overlong
            await flush()
            await flush()  # waits for the last chunk
        except BaseException:
            if in_flight is not None:  # what it made durable is reported as `processed`
                with contextlib.suppress(Exception):
                    await in_flight
            raise

    async def _submit(self, batch: EventBatch, rejections: list[Rejection]) -> None:
        settings = self.service.settings
        batch, invalid = validate(
            batch, time.time(), settings.max_future_skew, reserved_ok=self.simulated
        )
        both = rejections and invalid
        await self._reject(
            sorted(rejections + invalid, key=lambda r: r.index) if both else rejections or invalid
        )
        result = await self.service.pipeline.submit(batch)
        self.tally.processed += result.processed
        self.tally.duplicates += result.duplicates
        self.tally.late += result.late

    async def _reject(self, rejections: list[Rejection]) -> None:
        """Count rejections; keep the request's first `DEAD_LETTERS_PER_REQUEST` as dead
        letters (a bounded amount of work on the loop) and only count the rest."""
        if not rejections:
            return
        tally = self.tally
        room = MAX_LISTED_ERRORS - len(tally.rejections)
        if room > 0:
            tally.rejections.extend(rejections[:room])
        letters = max(0, DEAD_LETTERS_PER_REQUEST - tally.dead_letters)
        whole, rest = rejections[:letters], rejections[letters:]
        tally.rejected += len(whole)
        self.service.counters.rejected += len(whole)
        tally.dead_letters += len(whole)
        if whole:
            self.service.rejected(whole)
        self._count_only(len(rest), Counter(r.kind for r in rest))
