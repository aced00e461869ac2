"""Feature reads: one user, one feature, many users (the model-serving call), the versions.

Every answer for a user has the same shape, `{"user_id", "version", "stream_time",
"features": {name: {"value", "window_start", "window_end"}}}` (no bounds for features without
a window), so `/features/lookup` answers `{"users": [that, ...]}` in request order. 404 for an
unknown version or feature, 503 while a version is being backfilled (or features are off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from streamscore.api import schemas
from streamscore.api.auth import Authorizer
from streamscore.api.reads import READ_DENIED
from streamscore.api.responses import error, json_response
from streamscore.features.answers import encode_users
from streamscore.features.stage import FeatureStage, NotReady
from streamscore.handoff import served
from streamscore.service import Service

MAX_LOOKUP_USERS = 1000
MAX_USER_ID = 256


class LookupBody(msgspec.Struct, forbid_unknown_fields=True):
    users: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_USER_ID)]],
        msgspec.Meta(max_length=MAX_LOOKUP_USERS),
    ]
    names: list[str] | None = None
    version: str | None = None


_lookup_body = msgspec.json.Decoder(LookupBody)


class FeatureValue(BaseModel):
    value: float | int | str | bool | None = Field(description="null: an empty window's mean...")
    window_start: float | None = Field(None, description="inclusive; windowed features only")
    window_end: float | None = Field(None, description="inclusive, = stream_time")


class UserFeatures(BaseModel):
    user_id: str
    version: str
    stream_time: float | None = Field(description="the largest accepted timestamp")
    features: dict[str, FeatureValue]


class LookupResponse(BaseModel):
    users: list[UserFeatures] = Field(description="one per requested user, in request order")


class BackfillState(BaseModel):
    progress: float
    events: int
    total: int
    error: str | None


class VersionState(BaseModel):
    version: str
    fingerprint: str
    features: list[str]
    state: str = Field(description="ready, backfilling or failed")
    backfill: BackfillState


class VersionsResponse(BaseModel):
    default: str
    versions: list[VersionState]


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown version or feature"},
    503: {"model": schemas.ErrorResponse, "description": "backfilling, or features are off"},
    **READ_DENIED,
}
(_,), _lookup_components = msgspec.json.schema_components([LookupBody])


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n for n in text.split(",") if n]


async def answers(
    stage: FeatureStage, users: Sequence[str], version: str | None, names: Sequence[str] | None
) -> list[bytes]:
    """Each user's answer as JSON; raises KeyError (unknown version/feature) or NotReady.
    The engine's lock is awaited, not blocked on: the loop serves others meanwhile."""
    version, engine = stage.engine(version)
    table = await served(engine.submit_table(users, version, names))
    return encode_users(users, version, table)


def _json(parts: list[bytes]) -> Response:
    return Response(parts[0], media_type="application/json")


def router(service: Service, authorizer: Authorizer) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(authorizer.require("read"))], tags=["features"])

    async def answer(
        users: Sequence[str], version: str | None, names: Sequence[str] | None
    ) -> list[bytes] | Response:
        if service.features is None:
            return error(503, "features are off (--features off)")
        try:
            return await answers(service.features, users, version, names)
        except KeyError as exc:
            return error(404, str(exc.args[0]))
        except NotReady as exc:
            return error(503, str(exc))

    @routes.get("/users/{user_id}/features", response_model=UserFeatures, responses=NOT_FOUND)
    async def user_features(
        user_id: str,
        version: Annotated[
            str | None, Query(description="feature version (default: server's)")
        ] = None,
        names: Annotated[str | None, Query(description="comma-separated feature names")] = None,
    ) -> Response:
        found = await answer([user_id], version, _names(names))
        return found if isinstance(found, Response) else _json(found)

    @routes.get(
        "/users/{user_id}/features/{name}", response_model=UserFeatures, responses=NOT_FOUND
    )
    async def one_feature(
        user_id: str,
        name: str,
        version: Annotated[
            str | None, Query(description="feature version (default: server's)")
        ] = None,
    ) -> Response:
        found = await answer([user_id], version, [name])
        return found if isinstance(found, Response) else _json(found)

    @routes.post(
        "/features/lookup",
        response_model=LookupResponse,
        responses={400: {"model": schemas.ErrorResponse, "description": "bad body"}, **NOT_FOUND},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _lookup_components["LookupBody"]}},
            }
        },
    )
    async def lookup(request: Request) -> Response:
        try:
            body = _lookup_body.decode(await request.body())
        except msgspec.DecodeError as exc:
            return error(
                400,
                f'body must be {{"users": [...] (at most {MAX_LOOKUP_USERS}), "names": [...], '
                f'"version": "..."}}: {exc}',
            )
        found = await answer(body.users, body.version, body.names)
        if isinstance(found, Response):
            return found
        return Response(b'{"users":[' + b",".join(found) + b"]}", media_type="application/json")

    @routes.get(
        "/features/versions",
        response_model=VersionsResponse,
        responses={503: NOT_FOUND[503], **READ_DENIED},
    )
    def versions() -> Response:
        if service.features is None:
            return error(503, "features are off (--features off)")
        return json_response(service.features.versions())

    return routes
