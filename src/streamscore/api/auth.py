"""API keys with scopes, and per-key rate limits.

Keys come from `--api-keys` (comma-separated items `KEY` or `KEY:SCOPE[+SCOPE...]`) and/or
`--api-key-file` (lines `KEY` or `KEY SCOPE[,SCOPE...]`; `#` starts a comment). Scopes are
`ingest`, `read` and `admin`; a key without scopes has all three. Only SHA-256 digests of keys
are kept, compared with `hmac.compare_digest` against every key (no early exit), and a key is
named in logs and metrics by a short digest prefix, never by itself.

>>> keys = ApiKeys.parse("alpha,beta:read+ingest", None)
>>> keys.identify("Bearer beta").scopes == {"read", "ingest"}
True
>>> keys.identify("Bearer alpha").scopes == set(SCOPES)
True
>>> keys.identify("Bearer gamma"), keys.identify(None), keys.identify("Basic beta")
(None, None, None)
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

SCOPES = ("ingest", "read", "admin")


class Denied(Exception):
    """Answered with 401 (no or unknown key) or 403 (the key lacks the scope)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str  # digest prefix of the key, or "anonymous" when no keys are configured
    scopes: frozenset[str]


ANONYMOUS = Caller("anonymous", frozenset(SCOPES))


def _scopes(text: str, separator: str) -> frozenset[str]:
    found = frozenset(s.strip() for s in text.split(separator) if s.strip())
    unknown = found - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown API key scope {sorted(unknown)[0]!r}: use {', '.join(SCOPES)}")
    return found or frozenset(SCOPES)


class ApiKeys:
    def __init__(self, keys: list[tuple[str, frozenset[str]]]) -> None:
        self._keys = [(hashlib.sha256(k.encode()).digest(), s) for k, s in keys if k]

    @classmethod
    def parse(cls, items: str, key_file: str | None) -> ApiKeys:
        """Raises ValueError on an unknown scope; OSError if the file cannot be read."""
        keys = []
        for item in items.split(","):
            key, _, scopes = item.strip().partition(":")
            if key:
                keys.append((key, _scopes(scopes, "+")))
        if key_file:
            for line in Path(key_file).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    key, _, scopes = line.partition(" ")
                    keys.append((key, _scopes(scopes, ",")))
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller if the header carries a configured key, else None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        presented = hashlib.sha256(authorization[7:].strip().encode()).digest()
        match = None
        for digest, scopes in self._keys:
            if hmac.compare_digest(digest, presented):
                match = Caller(digest.hex()[:12], scopes)
        return match


class Authorizer:
    """FastAPI dependencies: `Depends(authorizer.require("read"))` gives the `Caller` or
    raises `Denied`. Without configured keys everyone is allowed; reads need a key only with
    `--auth-reads`."""

    def __init__(self, keys: ApiKeys, auth_reads: bool) -> None:
        self.keys = keys
        self.auth_reads = auth_reads

    def check(self, authorization: str | None, scope: str) -> Caller:
        if not self.keys.enabled or (scope == "read" and not self.auth_reads):
            return ANONYMOUS
        caller = self.keys.identify(authorization)
        if caller is None:
            raise Denied(401, "missing or invalid API key: send Authorization: Bearer <key>")
        if scope not in caller.scopes:
            raise Denied(403, f"this API key lacks the {scope!r} scope")
        return caller

    def require(self, scope: str) -> Callable[[Request], Caller]:
        def dependency(request: Request) -> Caller:
            return self.check(request.headers.get("authorization"), scope)

        dependency.__name__ = f"require_{scope}"
        return dependency


class TokenBucket:
    """`rate` events per second, bursts up to `burst`.

    >>> bucket = TokenBucket(rate=10, burst=20, now=0.0)
    >>> bucket.take(15, now=0.0), bucket.take(10, now=0.0), bucket.take(10, now=1.0)
    (0.0, 0.5, 0.0)
    """

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic() if now is None else now

    def take(self, n: float, now: float | None = None) -> float:
        """0 if `n` tokens were taken, else the seconds until they will be there (none taken)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if n <= self.tokens or (n > self.burst and self.tokens >= self.burst):
            self.tokens -= n
            return 0.0
        return (min(n, self.burst) - self.tokens) / self.rate


class RateLimits:
    """One bucket per key id; `rate` 0 means unlimited."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst or rate
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key_id: str, events: int) -> float:
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(self.rate, self.burst)
        return bucket.take(events)
