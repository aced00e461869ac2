"""The API's requests and responses, independent of sync or async transport.

Each endpoint is a `Call` (what to send, how to decode the answer); `Attempts.settle` turns an
attempt's response (or transport error) into the decoded body, a `Retry`, or a raised typed
error. Both clients share this and only do the I/O and the waiting, so they cannot disagree
about the protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from streamscore.client.errors import (
    ApiError,
    RequestRejected,
    RetriesExhausted,
    ServerError,
    Unauthorized,
)
from streamscore.client.retry import RETRY_STATUSES, RetryPolicy, retry_after
from streamscore.client.types import Features, HistoryPage, IngestResult, Lookup, Median, Stats

T = TypeVar("T")
log = logging.getLogger("streamscore.client")

NDJSON = "application/x-ndjson"

# Not worth retrying: the URL itself is wrong.
PERMANENT = (httpx.UnsupportedProtocol,)


def _encode_hook(value: Any) -> Any:
    """NumPy arrays and scalars (anything with `tolist`) as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__} in an event")


_encoder = msgspec.json.Encoder(enc_hook=_encode_hook)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, replayable as is (its body is bytes), and the type its answer decodes to."""

    method: str
    path: str
    result: type[T]
    params: dict[str, str | int | float] | None = None
    content: bytes | None = None
    content_type: str | None = None

    def decode(self, body: bytes) -> T:
        return msgspec.json.decode(body, type=self.result)

    def request(self) -> dict[str, Any]:
        """The keyword arguments of `httpx.Client.request` (and of the async one) for this call."""
        headers = {"content-type": self.content_type} if self.content_type else None
        return {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "content": self.content,
            "headers": headers,
        }


def ingest_json(events: Sequence[Any]) -> Call[IngestResult]:
    body = _encoder.encode({"events": events})
    return Call("POST", "/ingest", IngestResult, content=body, content_type="application/json")


def ingest_ndjson(events: Sequence[Any]) -> Call[IngestResult]:
    body = b"".join(_encoder.encode(e) + b"\n" for e in events)
    return Call("POST", "/ingest", IngestResult, content=body, content_type=NDJSON)


def median(user_id: str) -> Call[Median]:
    return Call("GET", f"/users/{_segment(user_id)}/median", Median)


def history_page(
    user_id: str, since: float | None, until: float | None, limit: int, cursor: str | None
) -> Call[HistoryPage]:
    params: dict[str, str | int | float] = {"limit": limit}
    for key, value in (("since", since), ("until", until), ("cursor", cursor)):
        if value is not None:
            params[key] = value
    return Call("GET", f"/users/{_segment(user_id)}/history", HistoryPage, params=params)


def stats() -> Call[Stats]:
    return Call("GET", "/stats", Stats)


def features(user_id: str, version: str | None, names: Sequence[str] | None) -> Call[Features]:
    params: dict[str, str | int | float] = {}
    if version is not None:
        params["version"] = version
    if names is not None:
        params["names"] = ",".join(names)
    return Call("GET", f"/users/{_segment(user_id)}/features", Features, params=params or None)


def lookup(users: Sequence[str], names: Sequence[str] | None, version: str | None) -> Call[Lookup]:
    request: dict[str, object] = {"users": list(users)}
    if names is not None:
        request["names"] = list(names)
    if version is not None:
        request["version"] = version
    return Call(
        "POST",
        "/features/lookup",
        Lookup,
        content=_encoder.encode(request),
        content_type="application/json",
    )


def _segment(user_id: str) -> str:
    """A user id as one path segment, whatever characters it has.

    >>> _segment("a/b c")
    'a%2Fb%20c'
    """
    return quote(user_id, safe="")


class _ErrorBody(msgspec.Struct):
    error: str = ""
    processed: int | None = None


def api_error(status: int, body: bytes) -> ApiError:
    """The typed error for a refusal, with the server's message.

    >>> api_error(401, b'{"error": "no key"}')
    Unauthorized('401: no key')
    >>> api_error(503, b'{"error": "store", "processed": 7}').processed
    7
    """
    try:
        parsed = msgspec.json.decode(body, type=_ErrorBody)
        message, processed = parsed.error, parsed.processed
    except msgspec.DecodeError:
        message, processed = body[:200].decode(errors="replace"), None
    kind = (
        Unauthorized
        if status in (401, 403)
        else RequestRejected
        if status < 500
        else ServerError
        if status not in RETRY_STATUSES
        else ApiError
    )
    return kind(status, message, processed)


@dataclass(frozen=True)
class Retry:
    """Wait `delay` seconds, then send the call again."""

    delay: float


class Attempts:
    """Counts one call's attempts and says how long to wait before the next, or gives up."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.count = 0

    def failed(self, failure: Exception, hint: float | None) -> float:
        """Seconds to wait before retrying; raises `RetriesExhausted` past the total time."""
        delay = self.policy.delay(self.count, hint)
        self.count += 1
        elapsed = time.monotonic() - self.started
        if elapsed + delay > self.policy.total:
            raise RetriesExhausted(self.count, elapsed, failure) from failure
        return delay

    def settle(self, call: Call[T], answer: httpx.Response | httpx.TransportError) -> T | Retry:
        """The call's decoded answer, or a `Retry`; raises what retrying cannot help."""
        if isinstance(answer, PERMANENT):
            raise answer
        if isinstance(answer, httpx.TransportError):
            failure: Exception = answer
            hint = None
        elif answer.status_code < 400:
            return call.decode(answer.content)
        else:
            failure, hint = outcome(
                answer.status_code, answer.headers.get("retry-after"), answer.content
            )
        delay = self.failed(failure, hint)
        log.warning("%s %s failed (%s); retry in %.2f s", call.method, call.path, failure, delay)
        return Retry(delay)


def outcome(status: int, retry_header: str | None, body: bytes) -> tuple[ApiError, float | None]:
    """For a status >= 400: the error and the server's `Retry-After`, if retrying may help;
    raises the error at once otherwise."""
    failure = api_error(status, body)
    if status not in RETRY_STATUSES:
        raise failure
    return failure, retry_after(retry_header)
