"""HTTP routes. `/ingest` reads raw bytes (no pydantic on the hot path); reads are small."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
from fastapi import FastAPI, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from streamscore import __version__
from streamscore.api import ingest as ingest_route
from streamscore.api import profiling, schemas
from streamscore.api.auth import ApiKeys, RateLimits
from streamscore.api.dashboard import add_dashboard
from streamscore.api.ingest import error, json_response
from streamscore.api.timing import RequestTimer
from streamscore.config import Settings
from streamscore.ingest.decode import event_type
from streamscore.service import Service

log = logging.getLogger(__name__)

HISTORY_DEFAULT_LIMIT = 1000
HISTORY_MAX_LIMIT = 10_000


def create_app(settings: Settings) -> FastAPI:
    """The app over a `Service` built now (model loaded, state recovered), started on startup."""
    built = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built.start()
        profiler = profiling.start() if settings.profile else None
        sampler = asyncio.create_task(app.state.timeline.run())
        try:
            yield
        finally:
            sampler.cancel()
            await app.state.simulator.stop()
            if profiler is not None:
                profiling.write_on_exit(profiler, Path(settings.profile))
                log.info("profile written", extra={"path": settings.profile})
            built.close()

    app = FastAPI(
        title="streamscore",
        version=__version__,
        description="Real-time ML scoring of event streams.",
        lifespan=lifespan,
    )
    app.state.service = built  # for embedding and tests; handlers use `built` directly

    keys = ApiKeys.from_settings(settings.api_keys, settings.api_key_file)
    limits = RateLimits(settings.rate_limit, settings.rate_burst)

    def authorize(request: Request, write: bool) -> str | Response:
        """The caller's key id, or the 401 to answer; without configured keys, everyone."""
        if not keys.enabled or not (write or settings.auth_reads):
            return "anonymous"
        key_id = keys.identify(request.headers.get("authorization"))
        if key_id is None:
            return json_response(
                {"error": "missing or invalid API key: send Authorization: Bearer <key>"},
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        return key_id

    @app.post(
        "/ingest",
        response_model=schemas.IngestResponse,
        responses={
            400: {"model": schemas.ErrorResponse, "description": "body unreadable; nothing stored"},
            413: {"model": schemas.ErrorResponse, "description": "body or event count too large"},
            401: {"model": schemas.ErrorResponse, "description": "API key required"},
            408: {"model": schemas.ErrorResponse, "description": "body stalled"},
            415: {"model": schemas.ErrorResponse, "description": "unsupported content type"},
            429: {"model": schemas.ErrorResponse, "description": "rate limit of the key"},
            503: {"model": schemas.ErrorResponse, "description": "overloaded or store failing"},
        },
        openapi_extra={"requestBody": _ingest_request_body(built.scorer.n_features)},
        summary="Score and store events; 200 means every processed event is durable",
    )
    async def ingest(request: Request) -> Response:
        key_id = authorize(request, write=True)
        if isinstance(key_id, Response):
            return key_id
        return await ingest_route.ingest(request, built, lambda events: limits.take(key_id, events))

    @app.get("/users/{user_id}/median", response_model=schemas.MedianResponse, responses=_READ)
    async def median(user_id: str, request: Request) -> Response:
        if isinstance(denied := authorize(request, write=False), Response):
            return denied
        service = built
        service.counters.median_requests += 1
        value, count = service.windows.get(user_id)
        clock = service.clock
        known = math.isfinite(clock.time)
        return json_response(
            {
                "user_id": user_id,
                "median": value,
                "count": count,
                "window_start": clock.cutoff if known else None,
                "window_end": clock.time if known else None,
            }
        )

    @app.get(
        "/users/{user_id}/history",
        response_model=schemas.HistoryResponse,
        responses={
            400: {"model": schemas.ErrorResponse, "description": "invalid cursor"},
            **_READ,
        },
    )
    def history(
        user_id: str,
        request: Request,
        since: Annotated[float | None, Query(description="inclusive lower bound, UNIX s")] = None,
        until: Annotated[float | None, Query(description="inclusive upper bound, UNIX s")] = None,
        limit: Annotated[int, Query(ge=1, le=HISTORY_MAX_LIMIT)] = HISTORY_DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> Response:
        if isinstance(denied := authorize(request, write=False), Response):
            return denied
        service = built
        service.counters.history_requests += 1
        try:
            after = _decode_cursor(cursor) if cursor else (-math.inf, -1)
        except ValueError:
            return error(400, "invalid cursor: pass next_cursor from a previous page unchanged")
        low = -math.inf if since is None else since
        high = math.inf if until is None else until
        rows = service.store.history(user_id, low, high, after, limit)
        next_cursor = _encode_cursor(rows[-1][0], rows[-1][2]) if len(rows) == limit else None
        return json_response(
            {
                "user_id": user_id,
                "history": [{"timestamp": ts, "score": score} for ts, score, _ in rows],
                "next_cursor": next_cursor,
            }
        )

    @app.get("/stats", response_model=schemas.StatsResponse, responses=_READ)
    async def stats(request: Request) -> Response:
        if isinstance(denied := authorize(request, write=False), Response):
            return denied
        service = built
        c = service.counters
        medians = service.windows.medians()
        clock = service.clock
        return json_response(
            {
                "status": "ok",
                "event_count": c.events,
                "users_tracked": service.windows.users,
                "median_of_medians": float(np.median(medians)) if len(medians) else None,
                "ingest_requests": c.ingest_requests,
                "median_requests": c.median_requests,
                "history_requests": c.history_requests,
                "avg_ingest_latency_seconds": c.ingest_latency.mean,
                "p50_ingest_latency_seconds": c.ingest_latency.quantile(0.5),
                "p99_ingest_latency_seconds": c.ingest_latency.quantile(0.99),
                "rejected_events": c.rejected,
                "late_events": c.late,
                "duplicate_events": c.duplicates,
                "windowed_events": service.windows.events,
                "window_bytes": service.windows.memory_bytes(),
                "stream_time": clock.time if math.isfinite(clock.time) else None,
                "window_seconds": clock.window,
                "in_flight_events": service.admission.in_flight,
                "index_lag_events": service.pipeline.index_lag,
                "model_version": service.scorer.version,
                "uptime_seconds": time.time() - service.started_at,
                "recovery_seconds": service.recovery_seconds,
            }
        )

    @app.get(
        "/batching",
        response_model=schemas.BatchingResponse,
        responses=_READ,
        summary="The scoring stage's batching policy, fitted cost model and recent cost",
    )
    async def batching(request: Request) -> Response:
        if isinstance(denied := authorize(request, write=False), Response):
            return denied
        return json_response(built.batching.summary())

    @app.get(
        "/batches/recent",
        response_model=schemas.BatchesResponse,
        responses=_READ,
        summary="The latest forward calls: size, wait, processing, predicted time and cost",
    )
    async def batches_recent(
        request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> Response:
        if isinstance(denied := authorize(request, write=False), Response):
            return denied
        return json_response({"batches": built.batching.recent(limit)})

    @app.get(
        "/dead-letters",
        response_model=schemas.DeadLettersResponse,
        responses={401: {"model": schemas.ErrorResponse, "description": "API key required"}},
        summary="Rejected events with their reason and raw bytes (newest kept, bounded)",
    )
    def dead_letters(
        request: Request,
        since: Annotated[float, Query(description="received at or after, UNIX s")] = 0.0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        if isinstance(denied := authorize(request, write=True), Response):
            return denied
        rows = built.store.dead_letters(since, limit)
        return json_response(
            {
                "dead_letters": [
                    {"id": i, "received_at": at, "index": idx, "error": err, "raw": raw}
                    for i, at, idx, err, raw in rows
                ]
            }
        )

    @app.get("/health", response_model=schemas.HealthResponse)
    async def health() -> Response:
        """The process is alive and answering."""
        return json_response({"status": "ok"})

    @app.get(
        "/ready",
        response_model=schemas.ReadyResponse,
        responses={503: {"model": schemas.ReadyResponse, "description": "not ready"}},
    )
    async def ready(request: Request) -> Response:
        """Model loaded, store writable, not overloaded: send traffic here."""
        problems = built.problems()
        body = {"status": "not ready" if problems else "ready", "problems": problems}
        return json_response(body, 503 if problems else 200)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics(request: Request) -> Response:
        """Prometheus exposition format."""
        if isinstance(denied := authorize(request, write=False), Response):
            return denied
        return Response(built.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/admin/profile",
        response_class=Response,
        responses={
            200: {"content": {"text/html": {}}, "description": "pyinstrument HTML report"},
            401: {"model": schemas.ErrorResponse, "description": "API key required"},
            409: {"model": schemas.ErrorResponse, "description": "a profile is running"},
        },
        summary="Profile the running service for N seconds (pyinstrument)",
    )
    async def profile(
        request: Request, seconds: Annotated[float, Query(gt=0, le=60)] = 5.0
    ) -> Response:
        if isinstance(denied := authorize(request, write=True), Response):
            return denied
        try:
            html = await profiling.profile_for(seconds)
        except profiling.ProfilerBusy as exc:
            return error(409, str(exc))
        return Response(html, media_type="text/html")

    add_dashboard(app, built, authorize)
    app.add_middleware(RequestTimer, histogram=built.metrics.request_seconds)

    return app


_READ: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.ErrorResponse, "description": "API key required (--auth-reads)"}
}


def _ingest_request_body(n_features: int) -> dict[str, object]:
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
    return {
        "required": True,
        "content": {
            "application/json": {"schema": envelope},
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "one event object per line"}
            },
        },
    }


def _encode_cursor(ts: float, seq: int) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([ts, seq])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, seq = msgspec.json.decode(raw, type=tuple[float, int])
    except (binascii.Error, msgspec.DecodeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    return ts, seq
