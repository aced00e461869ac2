"""Drift: the monitored values' statistics, alerts and change points, and re-pinning the
reference."""

from __future__ import annotations

from typing import Literal

import msgspec
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from streamscore.api import schemas
from streamscore.api.auth import Authorizer
from streamscore.api.operations import ADMIN_DENIED
from streamscore.api.reads import READ_DENIED
from streamscore.api.responses import error, json_response
from streamscore.service import Service


class Repin(msgspec.Struct, forbid_unknown_fields=True):
    source: Literal["recent"] = "recent"  # the most recent --drift-window events


def router(service: Service, authorizer: Authorizer) -> APIRouter:
    routes = APIRouter()

    @routes.get(
        "/drift",
        dependencies=[Depends(authorizer.require("read"))],
        response_model=schemas.DriftResponse,
        responses=READ_DENIED,
        summary="Per monitored value: PSI, KS, Wasserstein vs the reference, state; alerts",
    )
    async def drift() -> Response:
        return json_response(service.drift.report())

    @routes.post(
        "/drift/reference",
        dependencies=[Depends(authorizer.require("admin"))],
        response_model=schemas.RepinResponse,
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": schemas.body_schema(Repin)}},
            }
        },
        responses={
            400: {"model": schemas.ErrorResponse, "description": "bad body, or no events yet"},
            **ADMIN_DENIED,
        },
        summary="Re-pin every value's reference to the most recent events",
    )
    async def repin(request: Request) -> Response:
        body = await request.body()
        try:
            msgspec.json.decode(body or b"{}", type=Repin)
            events = service.drift.repin_recent()
        except (msgspec.DecodeError, ValueError) as exc:
            return error(400, str(exc))
        return json_response({"reference_events": events})

    return routes
