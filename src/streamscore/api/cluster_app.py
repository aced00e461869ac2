"""The HTTP application of a cluster node (`serve --cluster`): the same ingest route and read
shapes as a single node, answered by a `ClusterNode`.

A read of a user whose partition this node owns is answered here, at the cluster's stream
time. Otherwise a median comes from the Redis online store when there is one; anything else is
forwarded once to the owner (marked with `FORWARDED`, so that a node that has just lost the
partition answers 503 instead of forwarding again). History is read from PostgreSQL here.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import msgspec
from fastapi import Depends, FastAPI, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from streamscore import __version__
from streamscore.api import ingest
from streamscore.api.auth import ApiKeys, Authorizer, Denied, RateLimits
from streamscore.api.fast_path import FastPath
from streamscore.api.reads import HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, history_body
from streamscore.api.responses import error, json_response
from streamscore.cluster.node import ClusterNode
from streamscore.config import Settings
from streamscore.features.answers import encode_users
from streamscore.handoff import served
from streamscore.scoring.model import LoadedModel
from streamscore.store.base import StoreUnavailable

FORWARDED = "X-Streamscore-Forwarded"
FORWARD_TIMEOUT = 5.0


def create_cluster_app(settings: Settings, model: LoadedModel) -> FastAPI:
    node = ClusterNode(settings, model)
    address = settings.advertise_url or f"http://{settings.host}:{settings.port}"
    client = httpx.AsyncClient(timeout=FORWARD_TIMEOUT)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start(address)
        try:
            yield
        finally:
            await node.stop()
            await client.aclose()

    app = FastAPI(
        title="streamscore (cluster node)",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.node = node
    authorizer = Authorizer(
        ApiKeys.parse(settings.api_keys, settings.api_key_file), settings.auth_reads
    )
    read = [Depends(authorizer.require("read"))]

    @app.exception_handler(Denied)
    async def denied(request: Request, exc: Denied) -> Response:
        return json_response({"error": str(exc)}, exc.status, exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> Response:
        node.metrics.refusals.labels("store_unavailable").inc()
        return error(503, str(exc))

    limits = RateLimits(settings.rate_limit, settings.rate_burst)
    ingest_endpoint = ingest.IngestEndpoint(node, authorizer, limits)  # type: ignore[arg-type]
    app.include_router(ingest.router(ingest_endpoint))

    async def forward(request: Request, partition: int) -> Response:
        if request.headers.get(FORWARDED):
            return error(503, f"partition {partition} is moving to another node; retry")
        target = node.owner_address(partition)
        if target is None:
            return error(503, f"partition {partition} has no owner yet; retry")
        url = target.rstrip("/") + request.url.path
        headers = {FORWARDED: node.node_id or "1"}
        if auth := request.headers.get("authorization"):
            headers["authorization"] = auth
        try:
            answer = await client.get(url, params=request.query_params, headers=headers)
        except httpx.HTTPError as exc:
            return error(503, f"owner of partition {partition} unreachable: {exc!r}")
        return Response(answer.content, answer.status_code, media_type="application/json")

    def not_ready(partition: int) -> Response:
        return error(503, f"partition {partition} is being taken over; retry")

    @app.get("/users/{user_id}/median", dependencies=read)
    async def median(user_id: str, request: Request) -> Response:
        node.counters.median_requests += 1
        partition, owner = node.owner_of(user_id)
        if owner is not None:
            if not owner.caught_up:
                return not_ready(partition)
            value, count = await node.local(
                partition, lambda o: served(o.windows.submit_get(user_id))
            )
            clock = owner.clock
            return json_response(_median(user_id, value, count, clock.cutoff, clock.time))
        if node.online is not None and not request.headers.get(FORWARDED):
            stored = await node.online.get_median(partition, user_id)
            if stored is None:
                time = node.stream_time.time if node.stream_time is not None else -math.inf
                return json_response(_median(user_id, None, 0, time - settings.window, time))
            value = None if stored.count == 0 else stored.median
            return json_response(
                _median(user_id, value, stored.count, stored.window_start, stored.window_end)
            )
        return await forward(request, partition)

    @app.get("/users/{user_id}/features", dependencies=read)
    async def features(
        user_id: str,
        request: Request,
        version: str | None = None,
        names: str | None = None,
    ) -> Response:
        definitions = node.definitions
        if definitions is None:
            return error(503, "features are off (--features off)")
        chosen = version or settings.features_default_version or definitions.versions[-1]
        if chosen not in definitions.versions:
            return error(404, f"unknown feature version {chosen!r}")
        wanted = None if names is None else [n for n in names.split(",") if n]
        if unknown := set(wanted or ()) - set(definitions[chosen].names):
            return error(404, f"unknown feature {sorted(unknown)[0]!r}")
        partition, owner = node.owner_of(user_id)
        if owner is None:
            if node.online is not None and not request.headers.get(FORWARDED):
                stored = await node.online.get_features(partition, chosen, user_id)
                if stored is not None:
                    return Response(_only(stored, wanted), media_type="application/json")
            return await forward(request, partition)  # a user the store has not seen
        if not owner.caught_up or owner.features is None:
            return not_ready(partition)
        engine = owner.features
        try:
            table = await node.local(
                partition, lambda o: served(engine.submit_table([user_id], chosen, wanted))
            )
        except KeyError as exc:
            return error(404, f"unknown feature {exc.args[0]!r}")
        return Response(encode_users([user_id], chosen, table)[0], media_type="application/json")

    @app.get("/users/{user_id}/history", dependencies=read)
    def history(
        user_id: str,
        since: Annotated[float | None, Query()] = None,
        until: Annotated[float | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=HISTORY_MAX_LIMIT)] = HISTORY_DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query()] = None,
    ) -> Response:
        node.counters.history_requests += 1
        return history_body(node.history.history, user_id, since, until, limit, cursor)

    @app.get("/stats", dependencies=read)
    async def stats() -> Response:
        return json_response(await node.stats())

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        problems = node.problems()
        body = {"status": "not ready" if problems else "ready", "problems": problems}
        return json_response(body, 503 if problems else 200)

    @app.get("/metrics", dependencies=read)
    async def metrics() -> Response:
        return Response(node.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        FastPath,
        routes={("POST", "/ingest"): ingest_endpoint},
        histogram=node.metrics.request_seconds,
        refusals=node.metrics.refusals,
    )
    return app


def _only(answer: bytes, names: list[str] | None) -> bytes:
    """A stored features answer with only `names` (all of them for None)."""
    if names is None:
        return answer
    body = msgspec.json.decode(answer)
    body["features"] = {n: body["features"][n] for n in names}
    return msgspec.json.encode(body)


def _median(
    user_id: str, value: float | None, count: int, start: float, end: float
) -> dict[str, object]:
    known = math.isfinite(end)
    return {
        "user_id": user_id,
        "median": value,
        "count": count,
        "window_start": start if known else None,
        "window_end": end if known else None,
    }
