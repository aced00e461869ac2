"""The HTTP application: one `Service`, the routers of each area, authorization as a
dependency, and the lifespan that starts and stops the pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from streamscore import __version__
from streamscore.api import (
    drift,
    experiments,
    export,
    features,
    ingest,
    models,
    operations,
    profiling,
    reads,
)
from streamscore.api.auth import ApiKeys, Authorizer, Denied, RateLimits
from streamscore.api.dashboard import add_dashboard
from streamscore.api.docs import add_docs
from streamscore.api.fast_path import FastPath
from streamscore.api.responses import error, json_response
from streamscore.api.timing import RequestTimer
from streamscore.config import Settings
from streamscore.service import Service
from streamscore.store.base import StoreUnavailable

log = logging.getLogger(__name__)

METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def create_app(settings: Settings) -> FastAPI:
    """The app over a `Service` built now (model loaded, state recovered), started on startup."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
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
            service.close()

    app = FastAPI(
        title="streamscore",
        version=__version__,
        description="Real-time ML scoring of event streams.",
        lifespan=lifespan,
        docs_url=None,  # served from the package by `add_docs`, so it works offline
        redoc_url=None,
    )
    app.state.service = service  # for embedding and tests
    authorizer = Authorizer(
        ApiKeys.parse(settings.api_keys, settings.api_key_file), settings.auth_reads
    )

    @app.exception_handler(Denied)
    async def denied(request: Request, exc: Denied) -> Response:
        return json_response({"error": str(exc)}, exc.status, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        """Errors as `{"error": ...}`. A 405's `Allow` lists the methods of every route on the
        path: Starlette names only the first route's, and a path may have several. Each method
        is tried against the routes (FastAPI wraps included routers, so the routes' own
        `methods` are not all in view)."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = [
                method
                for method in METHODS
                if any(
                    route.matches({**request.scope, "method": method})[0] == Match.FULL
                    for route in app.router.routes
                )
            ]
            headers["Allow"] = ", ".join(allowed)
        return json_response({"error": str(exc.detail)}, exc.status_code, headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        """A read the store could not serve (unreachable, restarting): retry, not a 500."""
        service.metrics.refusals.labels("store_unavailable").inc()
        return error(503, str(exc))

    limits = RateLimits(settings.rate_limit, settings.rate_burst)
    ingest_endpoint = ingest.IngestEndpoint(service, authorizer, limits)
    app.include_router(ingest.router(ingest_endpoint))
    app.include_router(reads.router(service, authorizer))
    app.include_router(operations.router(service, authorizer))
    app.include_router(drift.router(service, authorizer))
    app.include_router(export.router(service, authorizer))
    app.include_router(models.router(service, authorizer))
    app.include_router(experiments.router(service, authorizer))
    app.include_router(features.router(service, authorizer))
    add_dashboard(app, service, authorizer)
    add_docs(app)
    app.add_middleware(
        RequestTimer,
        histogram=service.metrics.request_seconds,
        refusals=service.metrics.refusals,
    )
    app.add_middleware(  # outermost: ingest skips the framework (see `api.fast_path`)
        FastPath,
        routes={("POST", "/ingest"): ingest_endpoint},
        histogram=service.metrics.request_seconds,
        refusals=service.metrics.refusals,
    )
    return app
