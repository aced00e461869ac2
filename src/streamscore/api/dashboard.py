"""The live dashboard (`/dashboard`: static files shipped in the package, charts by a vendored
uPlot) with its data feeds, and the simulator's admin endpoints.

The page gets one snapshot per second over server-sent events (`/dashboard/stream`), or by
polling `/dashboard/snapshot` when the browser has no EventSource or an API key must be sent
(EventSource cannot send headers). SSE streams end when the server begins to shut down, so an
open page never holds a restart back.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles

from streamscore.api import schemas
from streamscore.api.ingest import error, ingest_json_body, json_response
from streamscore.generate.simulator import Run, Simulator, SimulatorBusy
from streamscore.service import Service
from streamscore.stats.timeline import Timeline, median_histogram

STATIC = Path(__file__).parent / "dashboard"
Authorize = Callable[[Request, bool], "str | Response"]


def vital_signs(service: Service) -> dict[str, float | None]:
    """What the dashboard samples each second."""
    c = service.counters
    medians = service.windows.medians()
    batching = service.batching.summary()
    return {
        "events": c.events,
        "users": service.windows.users,
        "median_of_medians": float(np.median(medians)) if len(medians) else None,
        "ingest_p50_ms": c.ingest_latency.quantile(0.5) * 1000 if c.ingest_requests else None,
        "ingest_p99_ms": c.ingest_latency.quantile(0.99) * 1000 if c.ingest_requests else None,
        "rejected": c.rejected,
        "late": c.late,
        "duplicates": c.duplicates,
        "batch_mean": batching["recent_mean_batch"],  # type: ignore[dict-item]
        "batch_target": batching["policy"]["target_size"],  # type: ignore[index]
        "cost_per_event": batching["recent_cost_per_event"],  # type: ignore[dict-item]
    }


def add_dashboard(app: FastAPI, service: Service, authorize: Authorize) -> None:
    timeline = Timeline(lambda: vital_signs(service))
    simulator = Simulator(
        lambda body: ingest_json_body(service, body),
        service.decoder.n_features,
        service.settings.window,
        service.settings.simulator_max_rps,
        service.settings.simulator_max_duration,
    )
    closing = asyncio.Event()
    app.state.simulator = simulator
    app.state.dashboard_closing = closing
    router = APIRouter()

    def snapshot(samples: list[dict[str, float | None]]) -> dict[str, object]:
        return {
            "samples": samples,
            "medians": median_histogram(service.windows.medians()),
            "simulator": simulator.status(),
        }

    @router.get("/dashboard", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @router.get(
        "/dashboard/snapshot",
        response_model=schemas.DashboardSnapshot,
        responses={401: {"model": schemas.ErrorResponse, "description": "API key required"}},
        summary="The dashboard's data: per-second samples newer than `since`, medians, simulator",
    )
    async def dashboard_snapshot(
        request: Request,
        since: Annotated[float, Query(description="only samples after this UNIX time")] = 0.0,
    ) -> Response:
        if isinstance(denied := authorize(request, False), Response):
            return denied
        return json_response(snapshot([s for s in timeline.samples if s["t"] > since]))  # type: ignore[operator]

    @router.get(
        "/dashboard/stream",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "`snapshot` events"},
            401: {"model": schemas.ErrorResponse, "description": "API key required"},
        },
        summary="Server-sent events: the whole timeline first, then one snapshot per second",
    )
    async def dashboard_stream(request: Request) -> Response:
        if isinstance(denied := authorize(request, False), Response):
            return denied

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            yield _event(snapshot(list(timeline.samples)))
            while not closing.is_set():
                sample = await timeline.wait_next()
                yield _event(snapshot([sample]))

        return StreamingResponse(events(), media_type="text/event-stream")

    @router.post(
        "/simulator/start",
        response_model=schemas.SimulatorStatus,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schemas.SimulatorStart.model_json_schema()}
                },
            }
        },
        responses={
            400: {"model": schemas.ErrorResponse, "description": "invalid, or over the caps"},
            401: {"model": schemas.ErrorResponse, "description": "API key required"},
            409: {"model": schemas.ErrorResponse, "description": "a run is in progress"},
        },
        summary="Run the synthetic event generator inside the service, through /ingest's path",
    )
    async def simulator_start(request: Request) -> Response:
        if isinstance(denied := authorize(request, True), Response):
            return denied
        try:
            run = msgspec.json.decode(await request.body(), type=Run)
        except msgspec.DecodeError as exc:
            return error(400, f"invalid simulator run: {exc}")
        if not all(math.isfinite(v) for v in (run.rps, run.duration_s, run.late_fraction)):
            return error(400, "rps, duration_s and late_fraction must be finite")
        try:
            simulator.start(run)
        except SimulatorBusy as exc:
            return error(409, str(exc))
        except ValueError as exc:
            return error(400, str(exc))
        return json_response(simulator.status())

    @router.get(
        "/simulator/status",
        response_model=schemas.SimulatorStatus,
        responses={401: {"model": schemas.ErrorResponse, "description": "API key required"}},
    )
    async def simulator_status(request: Request) -> Response:
        if isinstance(denied := authorize(request, False), Response):
            return denied
        return json_response(simulator.status())

    @router.post(
        "/simulator/stop",
        response_model=schemas.SimulatorStatus,
        responses={401: {"model": schemas.ErrorResponse, "description": "API key required"}},
    )
    async def simulator_stop(request: Request) -> Response:
        if isinstance(denied := authorize(request, True), Response):
            return denied
        await simulator.stop()
        return json_response(simulator.status())

    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.state.timeline = timeline


def _event(data: object) -> bytes:
    return b"event: snapshot\ndata: " + msgspec.json.encode(data) + b"\n\n"
