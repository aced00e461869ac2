"""Requests by endpoint and status code, their latency, and authorization refusals.

Endpoints are route templates, so ids do not explode the label set. 401 and 403 are refused
by the authorization dependency before any route code runs, so they are counted here.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

AUTH_REFUSALS = {401: "unauthenticated", 403: "forbidden"}


class RequestTimer:
    def __init__(
        self,
        app: ASGIApp,
        histogram: Histogram,
        refusals: Counter | None = None,
    ) -> None:
        self.app = app
        self.histogram = histogram  # labelled by endpoint and status
        self.refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped the app

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.histogram.labels(endpoint, str(status)).observe(time.perf_counter() - started)
            if self.refusals is not None and status in AUTH_REFUSALS:
                self.refusals.labels(AUTH_REFUSALS[status]).inc()
