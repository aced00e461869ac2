"""`POST /ingest`: read the body (whole JSON, or NDJSON as it streams), decode, validate, submit.

NDJSON is processed in chunks of `ndjson_chunk` lines while the body is still arriving, with
one chunk in the pipeline and the next being read, so an arbitrarily long body needs memory
for two chunks only.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from streamscore.batch import EventBatch, IngestResult, Rejection
from streamscore.ingest.decode import BodyError
from streamscore.ingest.validate import validate
from streamscore.pipeline.admission import Overloaded
from streamscore.score.scorer import ScoringFailed
from streamscore.service import Service
from streamscore.store.base import StoreUnavailable

MAX_LISTED_ERRORS = 100
JSON_TYPES = {"application/json", ""}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl"}


class TooLarge(ValueError):
    """Answered with 413."""


class RateLimited(RuntimeError):
    """The key's token bucket is empty: 429 with Retry-After."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after:.2f} s")
        self.retry_after = retry_after


class BodyTimeout(TimeoutError):
    """The client stopped sending its body: 408."""


RateLimiter = Callable[[int], float]  # events -> seconds to wait (0: go)


@dataclass
class Tally:
    """What a request came to so far."""

    processed: int = 0
    duplicates: int = 0
    late: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    rejected: int = 0
    sink: Callable[[list[Rejection]], None] | None = None  # dead letters and metrics

    def reject(self, rejections: list[Rejection]) -> None:
        self.rejected += len(rejections)
        if self.sink is not None and rejections:
            self.sink(rejections)
        room = MAX_LISTED_ERRORS - len(self.rejections)
        if room > 0:
            self.rejections.extend(rejections[:room])

    def add(self, result: IngestResult) -> None:
        self.processed += result.processed
        self.duplicates += result.duplicates
        self.late += result.late

    def body(self) -> dict[str, object]:
        return {
            "processed": self.processed,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "late": self.late,
            "errors": [{"index": r.index, "error": r.error} for r in self.rejections],
            "errors_truncated": self.rejected > len(self.rejections),
        }


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def error(status: int, message: str, retry_after: float = 1.0, **extra: object) -> Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if status in (429, 503) else None
    return json_response({"error": message, **extra}, status, headers)


async def ingest(request: Request, service: Service, limiter: RateLimiter) -> Response:
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    tally = Tally(sink=service.rejected)
    try:
        await service.admission.room()
        if content_type in JSON_TYPES:
            await _ingest_json(request, service, tally, limiter)
        elif content_type in NDJSON_TYPES:
            await _ingest_ndjson(request, service, tally, limiter)
        else:
            return error(
                415,
                f"unsupported content type {content_type!r}: use application/json or "
                "application/x-ndjson",
            )
    except BodyError as exc:
        return error(400, str(exc))
    except TooLarge as exc:
        return error(413, str(exc))
    except BodyTimeout as exc:
        return error(408, str(exc))
    except RateLimited as exc:
        extra = {"processed": tally.processed} if tally.processed else {}
        return error(429, str(exc), exc.retry_after, **extra)
    except (Overloaded, StoreUnavailable) as exc:
        extra = {"processed": tally.processed} if tally.processed else {}
        return error(503, str(exc), **extra)
    except ScoringFailed as exc:
        extra = {"processed": tally.processed} if tally.processed else {}
        return error(500, str(exc), **extra)
    finally:
        service.counters.rejected += tally.rejected
    service.counters.ingest_requests += 1
    service.counters.ingest_latency.record(time.perf_counter() - started)
    return json_response(tally.body())


async def _submit(
    service: Service,
    batch: EventBatch,
    rejections: list[Rejection],
    tally: Tally,
    limiter: RateLimiter,
) -> None:
    settings = service.settings
    batch, invalid = validate(batch, time.time(), settings.max_future_skew)
    tally.reject(sorted(rejections + invalid, key=lambda r: r.index))
    wait = limiter(len(batch))
    if wait > 0:
        raise RateLimited(wait)
    tally.add(await service.pipeline.submit(batch))


async def _chunks(request: Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """The body's chunks; a client silent for `idle_timeout` seconds gets a 408."""
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BodyTimeout(f"no body bytes for {idle_timeout:g} s") from None
        yield chunk


async def _ingest_json(
    request: Request, service: Service, tally: Tally, limiter: RateLimiter
) -> None:
    limit = service.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit; use NDJSON")
    chunks = []
    size = 0
    async for chunk in _chunks(request, service.settings.body_timeout):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds the {limit}-byte limit; use NDJSON for long streams")
        chunks.append(chunk)
    await _process_json(service, b"".join(chunks), tally, limiter)


async def ingest_json_body(service: Service, body: bytes) -> Tally:
    """What `POST /ingest` does with a JSON body once it is read, counted alike: the built-in
    simulator enters the ingest path here. Raises what the route turns into 4xx/5xx."""
    started = time.perf_counter()
    tally = Tally(sink=service.rejected)
    try:
        await service.admission.room()
        await _process_json(service, body, tally, lambda events: 0.0)
    finally:
        service.counters.rejected += tally.rejected
    service.counters.ingest_requests += 1
    service.counters.ingest_latency.record(time.perf_counter() - started)
    return tally


async def _process_json(service: Service, body: bytes, tally: Tally, limiter: RateLimiter) -> None:
    if not body.strip():
        raise BodyError('empty body: expected {"events": [...]}')
    batch, rejections = service.decoder.decode_json(body)
    count = len(batch) + len(rejections)
    if count > service.settings.max_events_per_request:
        raise TooLarge(
            f"{count} events exceed the limit of {service.settings.max_events_per_request} "
            "per JSON request; split it or use NDJSON"
        )
    await _submit(service, batch, rejections, tally, limiter)


async def _ingest_ndjson(
    request: Request, service: Service, tally: Tally, limiter: RateLimiter
) -> None:
    settings = service.settings
    lines: list[bytes] = []
    rejections: list[Rejection] = []
    first_index = 0  # index of lines[0]
    next_index = 0
    tail = b""
    skipping = False  # inside a line that is over the limit
    in_flight = None

    async def flush() -> None:
        """Decode the lines read so far, wait for the previous chunk, then submit this one."""
        nonlocal lines, rejections, first_index, in_flight
        batch, bad = service.decoder.decode_lines(lines, first_index) if lines else (None, [])
        pending = rejections + bad
        lines, rejections, first_index = [], [], next_index
        if in_flight is not None:
            await in_flight
            in_flight = None
        if batch is None:
            tally.reject(pending)
        else:
            in_flight = asyncio.ensure_future(_submit(service, batch, pending, tally, limiter))

    async for chunk in _chunks(request, settings.body_timeout):
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        for part in parts:
            if skipping:
                skipping = False
                continue
            line = part.strip()
            if not line:
                continue
            if len(line) > settings.max_line_bytes:
                rejections.append(_overlong(next_index, settings.max_line_bytes, line))
            else:
                if not lines:
                    first_index = next_index
                lines.append(line)
            next_index += 1
            if len(lines) >= settings.ndjson_chunk:
                await flush()
        if not skipping and len(tail) > settings.max_line_bytes:
            rejections.append(_overlong(next_index, settings.max_line_bytes, tail))
            next_index += 1
            tail = b""
            skipping = True
        elif skipping:
            tail = b""
    if tail.strip() and not skipping:
        if not lines:
            first_index = next_index
        lines.append(tail.strip())
        next_index += 1
    await flush()
    await flush()  # waits for the last chunk


def _overlong(index: int, limit: int, start: bytes) -> Rejection:
    return Rejection(index, f"line longer than {limit} bytes", start[:1024], "line_too_long")
