"""JSON responses encoded by msgspec, and the error shape every endpoint answers with."""

from __future__ import annotations

import math

import msgspec
from starlette.responses import Response


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def error(status: int, message: str, retry_after: float = 1.0, **extra: object) -> Response:
    """`{"error": message, ...}`; 429 and 503 carry `Retry-After` (whole seconds, at least 1)."""
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if status in (429, 503) else None
    return json_response({"error": message, **extra}, status, headers)
