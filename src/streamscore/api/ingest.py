"""`POST /ingest` over HTTP: content type, authorization, reading the body (whole JSON, or
NDJSON as it streams, each with a stall timeout), and each failure mapped to its status and
counted in `streamscore_refusals_total{reason}`.

A JSON body's declared length is counted against admission's byte bound before a byte of it is
read (a chunked body, as it arrives), so at most `--max-in-flight-bytes` of bodies are buffered
at once, whatever the number of connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from streamscore.api import schemas
from streamscore.api.auth import Authorizer, Denied, RateLimits
from streamscore.api.responses import error, json_response
from streamscore.config import Settings
from streamscore.ingest.decode import BodyError, event_type
from streamscore.ingest.request import (
    MAX_IDEMPOTENCY_KEY,
    IngestRequest,
    RateLimited,
    TooLarge,
    TooSlow,
    idempotency_key,
)
from streamscore.pipeline.admission import Overloaded
from streamscore.pipeline.pipeline import AckTimeout
from streamscore.scoring.scorer import ScoringFailed
from streamscore.service import Service
from streamscore.store.base import StoreUnavailable

JSON_TYPES = {"application/json", ""}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl"}


class BodyTimeout(TimeoutError):
    """The client stopped sending its body: 408."""


class IngestEndpoint:
    """`POST /ingest` as one async call from a request to its response, authorization
    included, so that `FastPath` can answer it below the framework (see `api.fast_path`)."""

    def __init__(self, service: Service, authorizer: Authorizer, limits: RateLimits) -> None:
        self.service = service
        self.authorizer = authorizer
        self.limits = limits

    async def __call__(self, request: Request) -> Response:
        service, settings = self.service, self.service.settings
        try:
            caller = self.authorizer.check(request.headers.get("authorization"), "ingest")
        except Denied as exc:
            return json_response({"error": str(exc)}, exc.status, exc.headers)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in JSON_TYPES | NDJSON_TYPES:
            return error(
                415,
                f"unsupported content type {content_type!r}: use application/json or "
                "application/x-ndjson",
            )
        key = request.headers.get("idempotency-key")
        if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
            return error(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
        idempotency_key.set(key)
        ingest = IngestRequest(service, lambda events: self.limits.take(caller.key_id, events))
        try:
            await service.admission.room()
            if content_type in JSON_TYPES:
                await ingest.json(await _whole_body(request, ingest, settings))
            else:
                await ingest.ndjson(_chunks(request, settings.body_timeout))
        except BodyError as exc:
            return self.refuse("bad_body", error(400, str(exc)))
        except TooLarge as exc:
            return self.refuse("too_large", error(413, str(exc), **_processed(ingest)))
        except (BodyTimeout, TooSlow) as exc:
            return self.refuse("body_timeout", error(408, str(exc), **_processed(ingest)))
        except RateLimited as exc:
            return self.refuse(
                "rate_limited", error(429, str(exc), exc.retry_after, **_processed(ingest))
            )
        except (Overloaded, StoreUnavailable) as exc:
            return self.refuse(self._reason(exc), error(503, str(exc), **_processed(ingest)))
        except ScoringFailed as exc:
            return self.refuse("scoring_failed", error(500, str(exc), **_processed(ingest)))
        finally:
            ingest.release()
        ingest.finish()
        return json_response(ingest.tally.body())

    def refuse(self, reason: str, response: Response) -> Response:
        self.service.metrics.refusals.labels(reason).inc()
        return response

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, StoreUnavailable):
            return "store_unavailable"
        if isinstance(exc, AckTimeout):
            return "ack_timeout"
        return "shutting_down" if self.service.admission.closing else "overloaded"


def router(endpoint: IngestEndpoint) -> APIRouter:
    """The route as the framework knows it: its OpenAPI description, and the 405 that other
    methods on `/ingest` get. Both apps install `FastPath`, which answers a POST with the same
    endpoint before the framework routes it, so this handler runs only in an app without it."""
    routes = APIRouter()

    @routes.post(
        "/ingest",
        response_model=schemas.IngestResponse,
        responses={
            400: {"model": schemas.ErrorResponse, "description": "body unreadable; nothing stored"},
            413: {"model": schemas.ErrorResponse, "description": "body or event count too large"},
            401: {"model": schemas.ErrorResponse, "description": "API key required"},
            403: {"model": schemas.ErrorResponse, "description": "key lacks the ingest scope"},
            408: {"model": schemas.ErrorResponse, "description": "body stalled"},
            415: {"model": schemas.ErrorResponse, "description": "unsupported content type"},
            429: {"model": schemas.ErrorResponse, "description": "rate limit of the key"},
            503: {"model": schemas.ErrorResponse, "description": "overloaded or store failing"},
        },
        openapi_extra={"requestBody": _request_body(endpoint.service.decoder.n_features)},
        summary="Score and store events; 200 means every processed event is durable",
    )
    async def ingest(request: Request) -> Response:
        return await endpoint(request)

    return routes


async def _whole_body(request: Request, ingest: IngestRequest, settings: Settings) -> bytes:
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        if int(declared) > limit:
            raise TooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit; use NDJSON")
        await ingest.hold(int(declared))
    chunks = []
    size = 0
    async for chunk in _chunks(request, settings.body_timeout):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds the {limit}-byte limit; use NDJSON for long streams")
        if size > ingest.held_bytes:  # chunked: counted as it arrives
            await ingest.hold(size - ingest.held_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _processed(ingest: IngestRequest) -> dict[str, int]:
    """NDJSON: what was already durable when the request failed."""
    return {"processed": ingest.tally.processed} if ingest.tally.processed else {}


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


def _request_body(n_features: int) -> dict[str, object]:
    (_event,), components = msgspec.json.schema_components([event_type(n_features)])
    event = components["Event"]
    envelope = {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                # Items are checked one by one: a bad event is rejected in the 200 response
                # with its index and reason, never the whole request.
                "items": {"description": "an event, see x-event", "x-event": event},
            }
        },
    }
    examples = [
        {
            "user_id": "user-1",
            "timestamp": 1767225600.0,
            "features": [round(0.1 * (i + 1), 1) for i in range(n_features)],
            "event_id": "order-17",
        },
        {
            "user_id": "user-2",
            "timestamp": 1767225601.5,
            "features": [0.0] * n_features,
            "priority": "high",
        },
    ]
    lines = "".join(msgspec.json.encode(e).decode() + "\n" for e in examples)
    return {
        "required": True,
        "description": "`application/json`: one object with an `events` list, at most "
        "--max-body-bytes. `application/x-ndjson`: one event object per line, read as it "
        "streams, for bodies of any length. The two events of the JSON example as NDJSON:\n\n"
        # In words, not as an NDJSON media-type example: fuzzers (schemathesis) cannot
        # serialize NDJSON and report such an example as an error.
        f"```\n{lines}```",
        "content": {
            "application/json": {
                "schema": envelope,
                "examples": {
                    "two events": {
                        "summary": "two events, one with an event_id (retries never double-count)",
                        "value": {"events": examples},
                    }
                },
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "one event object per line"}
            },
        },
    }
