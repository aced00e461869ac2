"""When to try again: the server's `Retry-After` if it gave one, else jittered exponential
backoff ("full jitter"), and never past the total retry time.

Jitter matters because a restarted service is met by every client at once; spreading the
retries lets it come back up under load instead of being knocked over again.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """`total` seconds of retrying per call; waits start at `base` and double up to `cap`.

    >>> policy = RetryPolicy(base=0.1, cap=2.0)
    >>> all(0 <= policy.delay(n, None) <= min(2.0, 0.1 * 2**n) for n in range(10))
    True
    >>> 3.0 <= policy.delay(0, retry_after=3.0) <= 3.3
    True
    """

    total: float = 60.0
    base: float = 0.1
    cap: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return retry_after * (1.0 + 0.1 * self.rng.random())
        return self.rng.uniform(0.0, min(self.cap, self.base * 2.0**attempt))

    def deadline(self) -> float:
        return time.monotonic() + self.total


def retry_after(header: str | None) -> float | None:
    """`Retry-After` in seconds (the delta form; an HTTP date is ignored).

    >>> retry_after("2"), retry_after(None), retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    (2.0, None, None)
    """
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None
