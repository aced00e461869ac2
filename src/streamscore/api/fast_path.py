"""The hottest route answered below the framework.

`POST /ingest` is most of the traffic, and with small bodies the framework was most of its
cost: on 1-event requests ~70 % of the event loop's time went to routing, the middleware stack
and dependency resolution before the handler ran. This ASGI layer sits outside all of that and
hands such a request straight to its endpoint; everything else goes on to the app. What the
framework did for the route is done here: the request-latency histogram and the count of
refused API keys (as `RequestTimer` does for the other routes), and errors that escape become
500s in the server's outermost layer, as before.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from streamscore.api.timing import AUTH_REFUSALS

Endpoint = Callable[[Request], Awaitable[Response]]


class FastPath:
    def __init__(
        self,
        app: ASGIApp,
        routes: dict[tuple[str, str], Endpoint],
        histogram: Histogram,
        refusals: Counter,
    ) -> None:
        self.app = app
        self.routes = routes  # (method, path) -> endpoint
        self.histogram = histogram
        self.refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)
        status = response.status_code
        self.histogram.labels(scope["path"], str(status)).observe(time.perf_counter() - started)
        if status in AUTH_REFUSALS:
            self.refusals.labels(AUTH_REFUSALS[status]).inc()
