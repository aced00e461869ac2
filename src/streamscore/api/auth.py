"""API keys and per-key rate limits.

Keys come from `--api-keys` (comma-separated) and/or `--api-key-file` (one per line). Only
their SHA-256 digests are kept, compared with `hmac.compare_digest` against every key (no early
exit), and a key is named in logs and metrics by a short digest prefix, never by itself.

>>> keys = ApiKeys.from_settings("alpha,beta", None)
>>> keys.identify("Bearer beta") == keys.identify("Bearer beta") != None
True
>>> keys.identify("Bearer gamma"), keys.identify(None), keys.identify("Basic beta")
(None, None, None)
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys if k]

    @classmethod
    def from_settings(cls, keys: str, key_file: str | None) -> ApiKeys:
        found = [k.strip() for k in keys.split(",")]
        if key_file:
            found += [line.strip() for line in Path(key_file).read_text().splitlines()]
        return cls([k for k in found if k and not k.startswith("#")])

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> str | None:
        """The key's id (digest prefix) if the header carries a configured key, else None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        presented = hashlib.sha256(authorization[7:].strip().encode()).digest()
        match = None
        for digest in self._digests:
            if hmac.compare_digest(digest, presented):
                match = digest
        return match.hex()[:12] if match is not None else None


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
