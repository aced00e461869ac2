"""Model registry endpoints: list, upload, activate (and roll back), shadow-score."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from streamscore.api import schemas
from streamscore.api.auth import Authorizer
from streamscore.api.operations import ADMIN_DENIED
from streamscore.api.reads import READ_DENIED
from streamscore.api.responses import error, json_response
from streamscore.scoring.control import Incompatible
from streamscore.scoring.model import ModelLoadError
from streamscore.scoring.registry import UnknownVersion
from streamscore.service import Service

MAX_MODEL_BYTES = 512 * 1024 * 1024


class VersionBody(msgspec.Struct, forbid_unknown_fields=True):
    version: str


def _body_schema() -> dict[str, object]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.body_schema(VersionBody)}},
        }
    }


def _version(body: bytes, name: str) -> str:
    """The body's version, which must be one of model `name` (ValueError otherwise)."""
    try:
        version = msgspec.json.decode(body, type=VersionBody).version
    except msgspec.DecodeError as exc:
        raise ValueError(f'body must be {{"version": "{name}@<digest>"}}: {exc}') from None
    if version.split("@")[0] != name:
        raise ValueError(f"{version!r} is not a version of model {name!r}")
    return version


def router(service: Service, authorizer: Authorizer) -> APIRouter:
    routes = APIRouter()
    read = [Depends(authorizer.require("read"))]
    admin = [Depends(authorizer.require("admin"))]
    control = service.models

    @routes.get("/models", dependencies=read, responses=READ_DENIED)
    async def models() -> Response:
        """Names, versions, the active version, per-version counters and the last swap."""
        listing = service.registry.listing()
        listing["last_swap"] = service.swapper.last
        shadow = control.shadow
        listing["shadow"] = None if shadow is None else shadow.version
        return json_response(listing)

    @routes.post(
        "/models",
        status_code=201,
        dependencies=admin,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            }
        },
        responses={
            400: {"model": schemas.ErrorResponse, "description": "not a loadable model"},
            413: {"model": schemas.ErrorResponse, "description": "file too large"},
            **ADMIN_DENIED,
        },
        summary="Register a version: a weights-only state_dict or TorchScript, as --model",
    )
    async def upload(request: Request, name: Annotated[str, Query()]) -> Response:
        data = await request.body()
        if len(data) > MAX_MODEL_BYTES:
            return error(413, f"model files are limited to {MAX_MODEL_BYTES} bytes")
        if not data:
            return error(400, "send the model file as the request body")
        try:
            version = await run_in_threadpool(service.registry.add, name, data)
        except ModelLoadError as exc:
            return error(400, str(exc).replace("upload.pt", "the uploaded file"))
        return json_response({"name": version.name, "version": version.version}, 201)

    @routes.post(
        "/models/{name}/activate",
        dependencies=admin,
        openapi_extra=_body_schema(),
        responses={
            400: {"model": schemas.ErrorResponse, "description": "bad body or incompatible"},
            404: {"model": schemas.ErrorResponse, "description": "no such version"},
            **ADMIN_DENIED,
        },
        summary="Make a version the scoring model (the previous version: a rollback)",
    )
    async def activate(name: str, request: Request) -> Response:
        try:
            version = _version(await request.body(), name)
            swap = await run_in_threadpool(control.activate, version)
        except UnknownVersion as exc:
            return error(404, f"no model version {exc.args[0]!r}")
        except (Incompatible, ValueError) as exc:
            return error(400, str(exc))
        return json_response({"active": version, "swap": swap})

    @routes.post(
        "/models/{name}/shadow",
        dependencies=admin,
        openapi_extra=_body_schema(),
        responses={
            400: {"model": schemas.ErrorResponse, "description": "bad body or incompatible"},
            404: {"model": schemas.ErrorResponse, "description": "no such version"},
            **ADMIN_DENIED,
        },
        summary="Score every event with this version too, off the ack path, and compare",
    )
    async def shadow_start(name: str, request: Request) -> Response:
        try:
            version = _version(await request.body(), name)
            await run_in_threadpool(control.start_shadow, version)
        except UnknownVersion as exc:
            return error(404, f"no model version {exc.args[0]!r}")
        except (Incompatible, ValueError) as exc:
            return error(400, str(exc))
        return json_response({"shadow": version})

    @routes.get(
        "/models/{name}/shadow",
        dependencies=read,
        responses={
            404: {"model": schemas.ErrorResponse, "description": "no shadow of this model"},
            **READ_DENIED,
        },
        summary="Served vs shadow scores: means, correlation, mean |difference|, p99 latencies",
    )
    async def shadow_compare(name: str) -> Response:
        shadow = control.shadow
        if shadow is None or shadow.version.split("@")[0] != name:
            return error(404, f"no shadow version of model {name!r} is running")
        return json_response(shadow.comparison())

    @routes.delete(
        "/models/{name}/shadow",
        dependencies=admin,
        responses={
            404: {"model": schemas.ErrorResponse, "description": "no shadow of this model"},
            **ADMIN_DENIED,
        },
        summary="Stop shadow scoring; answers the final comparison",
    )
    async def shadow_stop(name: str) -> Response:
        shadow = control.shadow
        if shadow is None or shadow.version.split("@")[0] != name:
            return error(404, f"no shadow version of model {name!r} is running")
        await run_in_threadpool(control.stop_shadow)
        return json_response(shadow.comparison())

    return routes
