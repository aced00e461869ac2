"""A Python client for streamscore: `Client` (blocking) and `AsyncClient` (asyncio).

Light to import (httpx, msgspec and the standard library only), so producers and notebooks
need neither torch nor the server. See docs/client.md.
"""

from streamscore.client.aio import AsyncClient
from streamscore.client.errors import (
    ApiError,
    RequestRejected,
    RetriesExhausted,
    ServerError,
    StreamscoreError,
    Unauthorized,
)
from streamscore.client.sync import Client
from streamscore.client.types import (
    Event,
    EventError,
    Features,
    FeatureValue,
    HistoryPoint,
    IngestResult,
    Median,
    Stats,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "Event",
    "EventError",
    "FeatureValue",
    "Features",
    "HistoryPoint",
    "IngestResult",
    "Median",
    "RequestRejected",
    "RetriesExhausted",
    "ServerError",
    "Stats",
    "StreamscoreError",
    "Unauthorized",
]
