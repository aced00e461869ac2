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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles

from streamscore.api import schemas
from streamscore.api.auth import Authorizer
from streamscore.api.operations import ADMIN_DENIED
from streamscore.api.reads import READ_DENIED
from streamscore.api.responses import error, json_response
from streamscore.generate.simulator import Run, Simulator, SimulatorBusy
from streamscore.ingest.request import IngestRequest, Tally
from streamscore.service import Service
from streamscore.telemetry.timeline import Timeline, median_histogram

STATIC = Path(__file__).parent / "dashboard"
MAX_STREAMS = 32  # concurrent server-sent-event streams; more get 503


def add_dashboard(app: FastAPI, service: Service, authorizer: Authorizer) -> None:
    timeline = Timeline(service.gauges.vital_signs)

    async def simulated(body: bytes) -> Tally:
        ingest = IngestRequest(service, simulated=True)
        await service.admission.room()
        await ingest.json(body)
        ingest.finish()
        return ingest.tally

    simulator = Simulator(
        simulated,
        service.decoder.n_features,
        service.settings.window,
        service.settings.simulator_max_rps,
        service.settings.simulator_max_duration,
    )
    closing = asyncio.Event()
    streams = [0]  # open SSE streams
    app.state.simulator = simulator
    app.state.dashboard_closing = closing
    router = APIRouter()
    read = [Depends(authorizer.require("read"))]
    admin = [Depends(authorizer.require("admin"))]

    def snapshot(samples: list[dict[str, float | None]]) -> dict[str, object]:
        return {
            "samples": samples,
            "medians": median_histogram(service.gauges.medians()),
            "simulator": simulator.status(),
            "models": models_panel(service),
            "drift": drift_panel(service),
        }

    @router.get("/dashboard", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @router.get(
        "/dashboard/snapshot",
        response_model=schemas.DashboardSnapshot,
        dependencies=read,
        responses=READ_DENIED,
        summary="The dashboard's data: per-second samples newer than `since`, medians, simulator",
    )
    async def dashboard_snapshot(
        since: Annotated[float, Query(description="only samples after this UNIX time")] = 0.0,
    ) -> Response:
        return json_response(snapshot([s for s in timeline.samples if s["t"] > since]))  # type: ignore[operator]

    @router.get(
        "/dashboard/stream",
        response_class=StreamingResponse,
        dependencies=read,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "`snapshot` events"},
            503: {"model": schemas.ErrorResponse, "description": "too many open streams"},
            **READ_DENIED,
        },
        summary="Server-sent events: the whole timeline first, then one snapshot per second",
    )
    async def dashboard_stream() -> Response:
        if streams[0] >= MAX_STREAMS:
            return error(503, f"{MAX_STREAMS} dashboard streams are open; poll the snapshot")
        streams[0] += 1

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n\n"
                yield _event(snapshot(list(timeline.samples)))
                while not closing.is_set():
                    sample = await timeline.wait_next()
                    yield _event(snapshot([sample]))
            finally:
                streams[0] -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    @router.post(
        "/simulator/start",
        dependencies=admin,
        response_model=schemas.SimulatorStatus,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": schemas.body_schema(schemas.SimulatorStart)}
                },
            }
        },
        responses={
            400: {"model": schemas.ErrorResponse, "description": "invalid, or over the caps"},
            **ADMIN_DENIED,
            409: {"model": schemas.ErrorResponse, "description": "a run is in progress"},
        },
        summary="Run the synthetic event generator inside the service, through /ingest's path",
    )
    async def simulator_start(request: Request) -> Response:
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
        dependencies=read,
        responses=READ_DENIED,
    )
    async def simulator_status() -> Response:
        return json_response(simulator.status())

    @router.post(
        "/simulator/stop",
        response_model=schemas.SimulatorStatus,
        dependencies=admin,
        responses=ADMIN_DENIED,
    )
    async def simulator_stop() -> Response:
        await simulator.stop()
        return json_response(simulator.status())

    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.state.timeline = timeline


def _event(data: object) -> bytes:
    return b"event: snapshot\ndata: " + msgspec.json.encode(data) + b"\n\n"


def models_panel(service: Service) -> dict[str, object]:
    """The active version, the last swap, the shadow comparison and the latest experiment."""
    book = service.experiments
    with book.lock:
        latest = book.running or next(reversed(book.experiments.values()), None)
        experiment = None if latest is None else latest.result()
    shadow = service.models.shadow
    return {
        "active": service.registry.active,
        "last_swap": service.swapper.last,
        "shadow": None if shadow is None else shadow.comparison(),
        "experiment": experiment,
    }


def drift_panel(service: Service) -> dict[str, object]:
    """Monitored values by PSI (highest first, no reference yet last), and recent change
    points, which the page marks on the throughput chart's time axis."""
    report = service.drift.report()
    values = sorted(
        (
            {"name": v["name"], "psi": v["psi"], "drifted": v["drifted"], "since": v["since"]}
            for v in report["values"]
        ),
        key=lambda v: -1.0 if v["psi"] is None else v["psi"],
        reverse=True,
    )
    changes = [
        {"name": c["name"], "time": c["time"], "direction": c["direction"]}
        for c in report["change_points"][-20:]
    ]
    return {"values": values, "change_points": changes}
