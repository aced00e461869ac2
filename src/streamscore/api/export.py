"""`GET /export`: every stored event in a time range as NDJSON, streamed from one snapshot of
the store (`streamscore.history.export`), so a response of any size holds one block in memory."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response, StreamingResponse

from streamscore.api import schemas
from streamscore.api.auth import Authorizer
from streamscore.api.responses import error
from streamscore.history import export
from streamscore.service import Service

MAX_USERS = 10_000

EXAMPLE_LINE = (
    '{"user_id":"user-1","timestamp":1767225600.0,"seq":42,"features":[0.1,0.2,0.3],'
    '"score":0.5123,"model_version":"demo_model.pt@3f2a9c1b0d4e","event_id":"order-17"}\n'
)


def router(service: Service, authorizer: Authorizer) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(authorizer.require("read"))])

    @routes.get(
        "/export",
        summary="Every stored event in [since, until] as NDJSON, streamed",
        description="One JSON object per line with the fields of the Parquet export "
        "(docs/export.md); optional fields (event_id, event_type, attributes, variant) are "
        "left out when absent. Lines come grouped by history chunk, each chunk one user's "
        "events in (timestamp, seq) order: sort by (timestamp, seq) to replay them.",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "NDJSON, one event per line",
                "content": {
                    "application/x-ndjson": {
                        "schema": {"type": "string"},
                        "example": EXAMPLE_LINE,
                    }
                },
            },
            400: {"model": schemas.ErrorResponse, "description": "bad range or user list"},
            401: {"model": schemas.ErrorResponse, "description": "API key required (--auth-reads)"},
            403: {"model": schemas.ErrorResponse, "description": "the key lacks the read scope"},
        },
    )
    def export_events(
        since: Annotated[float, Query(description="inclusive lower bound, UNIX s")],
        until: Annotated[float, Query(description="inclusive upper bound, UNIX s")],
        users: Annotated[
            str | None, Query(description="comma-separated user ids; all users when absent")
        ] = None,
    ) -> Response:
        if not (math.isfinite(since) and math.isfinite(until)) or since > until:
            return error(400, "since and until must be finite with since <= until")
        wanted = None if users is None else [u for u in users.split(",") if u]
        if wanted is not None and not 0 < len(wanted) <= MAX_USERS:
            return error(400, f"users must name 1 to {MAX_USERS} user ids, comma-separated")
        return StreamingResponse(
            export.ndjson(service.store, since, until, wanted),
            media_type="application/x-ndjson",
        )

    return routes
