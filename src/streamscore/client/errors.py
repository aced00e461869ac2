"""Typed failures: callers tell a request the server refused from one that never got through."""

from __future__ import annotations


class StreamscoreError(Exception):
    """Base of everything the client raises."""


class ApiError(StreamscoreError):
    """The server answered with an error status that retrying will not fix.

    `processed` is set when part of a streamed NDJSON body was stored before the refusal.
    """

    def __init__(self, status: int, message: str, processed: int | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.processed = processed


class Unauthorized(ApiError):
    """401/403: the API key is missing or wrong."""


class RequestRejected(ApiError):
    """Another 4xx: the request itself is wrong (bad body, too large, bad content type...)."""


class ServerError(ApiError):
    """A 5xx that is not a back-off signal (e.g. the model failed on this batch)."""


class RetriesExhausted(StreamscoreError):
    """Every attempt within the retry time was refused (429/503) or failed in transport.

    `last` is the final attempt's `ApiError` or transport exception.
    """

    def __init__(self, attempts: int, elapsed: float, last: Exception) -> None:
        super().__init__(f"gave up after {attempts} attempts in {elapsed:.1f} s: {last}")
        self.attempts = attempts
        self.elapsed = elapsed
        self.last = last
