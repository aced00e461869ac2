"""Operating the service: liveness and readiness, Prometheus metrics, the batching policy's
state, dead letters and on-demand profiling."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from streamscore.api import profiling, schemas
from streamscore.api.auth import Authorizer
from streamscore.api.reads import READ_DENIED
from streamscore.api.responses import error, json_response
from streamscore.service import Service

ADMIN_DENIED: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.ErrorResponse, "description": "API key required"},
    403: {"model": schemas.ErrorResponse, "description": "the key lacks the admin scope"},
}


def router(service: Service, authorizer: Authorizer) -> APIRouter:
    routes = APIRouter()
    read = [Depends(authorizer.require("read"))]
    admin = [Depends(authorizer.require("admin"))]

    @routes.get("/health", response_model=schemas.HealthResponse)
    async def health() -> Response:
        """The process is alive and answering."""
        return json_response({"status": "ok"})

    @routes.get(
        "/ready",
        response_model=schemas.ReadyResponse,
        responses={503: {"model": schemas.ReadyResponse, "description": "not ready"}},
    )
    async def ready() -> Response:
        """Model loaded, pipeline running, store writable, not overloaded: send traffic here."""
        problems = service.problems()
        body = {"status": "not ready" if problems else "ready", "problems": problems}
        return json_response(body, 503 if problems else 200)

    @routes.get(
        "/metrics",
        response_class=Response,
        dependencies=read,
        responses={200: {"content": {"text/plain": {}}}, **READ_DENIED},
    )
    async def metrics() -> Response:
        """Prometheus exposition format."""
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @routes.get(
        "/batching",
        response_model=schemas.BatchingResponse,
        dependencies=read,
        responses=READ_DENIED,
        summary="The scoring stage's batching policy, fitted cost model and recent cost",
    )
    async def batching() -> Response:
        return json_response(service.policy.summary())

    @routes.get(
        "/batches/recent",
        response_model=schemas.BatchesResponse,
        dependencies=read,
        responses=READ_DENIED,
        summary="The latest forward calls: size, wait, processing, predicted time and cost",
    )
    async def batches_recent(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        return json_response({"batches": service.policy.recent(limit)})

    @routes.get(
        "/dead-letters",
        response_model=schemas.DeadLettersResponse,
        dependencies=admin,
        responses=ADMIN_DENIED,
        summary="Rejected events with their reason and raw bytes (newest kept, bounded)",
    )
    def dead_letters(
        since: Annotated[float, Query(description="received at or after, UNIX s")] = 0.0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        rows = service.store.dead_letters(since, limit)
        return json_response(
            {
                "dead_letters": [
                    {"id": i, "received_at": at, "index": idx, "error": err, "raw": raw}
                    for i, at, idx, err, raw in rows
                ]
            }
        )

    @routes.post(
        "/admin/profile",
        response_class=Response,
        dependencies=admin,
        responses={
            200: {"content": {"text/html": {}}, "description": "pyinstrument HTML report"},
            409: {"model": schemas.ErrorResponse, "description": "a profile is running"},
            **ADMIN_DENIED,
        },
        summary="Profile the running service for N seconds (pyinstrument)",
    )
    async def profile(seconds: Annotated[float, Query(gt=0, le=60)] = 5.0) -> Response:
        try:
            html = await profiling.profile_for(seconds)
        except profiling.ProfilerBusy as exc:
            return error(409, str(exc))
        return Response(html, media_type="text/html")

    return routes
