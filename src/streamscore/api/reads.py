"""Read endpoints: a user's rolling median and history, and the service's totals."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from streamscore.api import schemas
from streamscore.api.auth import Authorizer
from streamscore.api.responses import error, json_response
from streamscore.handoff import served
from streamscore.service import Service

HistoryRow = tuple[float, float, int, dict[str, object]]  # (timestamp, score, seq, details)
HISTORY_DEFAULT_LIMIT = 1000
HISTORY_MAX_LIMIT = 10_000

READ_DENIED: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.ErrorResponse, "description": "API key required (--auth-reads)"},
    403: {"model": schemas.ErrorResponse, "description": "the key lacks the read scope"},
}


def router(service: Service, authorizer: Authorizer) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(authorizer.require("read"))])

    @routes.get(
        "/users/{user_id}/median", response_model=schemas.MedianResponse, responses=READ_DENIED
    )
    async def median(user_id: str) -> Response:
        service.counters.median_requests += 1
        value, count = await served(service.windows.submit_get(user_id))
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

    @routes.get(
        "/users/{user_id}/history",
        response_model=schemas.HistoryResponse,
        responses={
            400: {"model": schemas.ErrorResponse, "description": "invalid cursor"},
            **READ_DENIED,
        },
    )
    def history(
        user_id: str,
        since: Annotated[float | None, Query(description="inclusive lower bound, UNIX s")] = None,
        until: Annotated[float | None, Query(description="inclusive upper bound, UNIX s")] = None,
        limit: Annotated[int, Query(ge=1, le=HISTORY_MAX_LIMIT)] = HISTORY_DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> Response:
        service.counters.history_requests += 1
        return history_body(service.store.history, user_id, since, until, limit, cursor)

    @routes.get("/stats", response_model=schemas.StatsResponse, responses=READ_DENIED)
    async def stats(
        include_simulated: Annotated[
            bool, Query(description="count the simulator's users in median_of_medians")
        ] = False,
    ) -> Response:
        return json_response(service.gauges.stats(include_simulated))

    return routes


def history_body(
    read: Callable[[str, float, float, tuple[float, int], int], list[HistoryRow]],
    user_id: str,
    since: float | None,
    until: float | None,
    limit: int,
    cursor: str | None,
) -> Response:
    """One history page read by `read` (a store's `history`), as the endpoint answers it."""
    try:
        after = _decode_cursor(cursor) if cursor else (-math.inf, -1)
    except ValueError:
        return error(400, "invalid cursor: pass next_cursor from a previous page unchanged")
    low = -math.inf if since is None else since
    high = math.inf if until is None else until
    rows = read(user_id, low, high, after, limit)
    next_cursor = _encode_cursor(rows[-1][0], rows[-1][2]) if len(rows) == limit else None
    return json_response(
        {
            "user_id": user_id,
            "history": [
                {"timestamp": ts, "score": score, **details} for ts, score, _, details in rows
            ],
            "next_cursor": next_cursor,
        }
    )


def _encode_cursor(ts: float, seq: int) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([ts, seq])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, seq = msgspec.json.decode(raw, type=tuple[float, int])
    except (binascii.Error, msgspec.DecodeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    return ts, seq
