"""A/B experiment endpoints: start, read the verdict, look up an assignment, stop."""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from streamscore.api import schemas
from streamscore.api.auth import Authorizer
from streamscore.api.operations import ADMIN_DENIED
from streamscore.api.reads import READ_DENIED
from streamscore.api.responses import error, json_response
from streamscore.experiments.book import ExperimentConflict
from streamscore.experiments.experiment import Variant
from streamscore.scoring.control import Incompatible
from streamscore.scoring.registry import UnknownVersion
from streamscore.service import Service


class Outcome(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str


class ExperimentBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    variants: list[Variant]
    outcome: Outcome
    alpha: float = 0.05


NOT_FOUND = {404: {"model": schemas.ErrorResponse, "description": "no such experiment"}}


def router(service: Service, authorizer: Authorizer) -> APIRouter:
    routes = APIRouter()
    read = [Depends(authorizer.require("read"))]
    admin = [Depends(authorizer.require("admin"))]
    book = service.experiments

    @routes.post(
        "/experiments",
        status_code=201,
        dependencies=admin,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schemas.body_schema(ExperimentBody)}},
            }
        },
        responses={
            400: {"model": schemas.ErrorResponse, "description": "bad body or model version"},
            409: {"model": schemas.ErrorResponse, "description": "one is running, or name taken"},
            **ADMIN_DENIED,
        },
        summary="Start an A/B experiment: users hashed to variants, each scored by its model",
    )
    async def start(request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body(), type=ExperimentBody)
            if not 0 < body.alpha < 1:
                raise ValueError("alpha must be in (0, 1)")
            await run_in_threadpool(
                service.models.start_experiment,
                body.name,
                body.variants,
                {"event_type": body.outcome.event_type},
                body.alpha,
            )
        except ExperimentConflict as exc:
            return error(409, str(exc))
        except UnknownVersion as exc:
            return error(400, f"no model version {exc.args[0]!r}")
        except (msgspec.DecodeError, Incompatible, ValueError) as exc:
            return error(400, str(exc))
        return json_response(book.result(body.name), 201)

    @routes.get("/experiments", dependencies=read, responses=READ_DENIED)
    async def listing() -> Response:
        """Every experiment's name and status, and the running one."""
        with book.lock:
            rows = [{"name": n, "status": e.status} for n, e in book.experiments.items()]
            running = None if book.running is None else book.running.name
        return json_response({"experiments": rows, "running": running})

    @routes.get("/experiments/{name}", dependencies=read, responses={**NOT_FOUND, **READ_DENIED})
    async def result(name: str) -> Response:
        """Per-variant counts and conversion intervals, the always-valid p-value, a decision."""
        found = book.result(name)
        if found is None:
            return error(404, f"no experiment {name!r}")
        return json_response(found)

    @routes.get(
        "/experiments/{name}/assignments/{user_id}",
        dependencies=read,
        responses={**NOT_FOUND, **READ_DENIED},
    )
    async def assignment(name: str, user_id: str) -> Response:
        """The user's variant (a hash of experiment and user id: sticky, stateless)."""
        experiment = book.get(name)
        if experiment is None:
            return error(404, f"no experiment {name!r}")
        return json_response({"variant": experiment.variant_of(user_id).name})

    @routes.post(
        "/experiments/{name}/stop", dependencies=admin, responses={**NOT_FOUND, **ADMIN_DENIED}
    )
    async def stop(name: str) -> Response:
        """Freeze the counts and verdict; users go back to the active model."""
        if not await run_in_threadpool(service.models.stop_experiment, name):
            return error(404, f"no experiment {name!r}")
        return json_response(book.result(name))

    return routes
