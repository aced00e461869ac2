"""Backpressure: a bound on events accepted but not yet durable, shared by all requests.

A request that does not fit waits up to `max_wait` seconds for earlier ones to commit, then
gets `Overloaded` (503 with Retry-After). A batch larger than the whole bound is let in alone,
so no request is refused forever. Requests whose events are all `low` priority may fill only
`LOW_SHARE` of the bound: under overload they wait, and are refused, first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LOW_SHARE = 0.5


class Overloaded(RuntimeError):
    """The pipeline stayed full for `max_wait` seconds."""


class Admission:
    def __init__(self, max_in_flight: int, max_wait: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_wait = max_wait
        self.in_flight = 0
        self._waiting = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created lazily: it binds to the server's running loop
            self._changed = asyncio.Condition()
        return self._changed

    def _fits(self, n: int, low: bool) -> bool:
        bound = self.max_in_flight * (LOW_SHARE if low else 1.0)
        return self.in_flight == 0 or self.in_flight + n <= bound

    async def acquire(self, n: int, low: bool = False) -> None:
        await self._wait_until(lambda: self._fits(n, low))
        self.in_flight += n

    async def room(self) -> None:
        """Wait for any room before reading a body, so overload is refused before it costs."""
        await self._wait_until(lambda: self.in_flight < self.max_in_flight)

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        if ready():
            return
        changed = self._condition()
        self._waiting += 1
        try:
            async with changed:
                await asyncio.wait_for(changed.wait_for(ready), self.max_wait)
        except TimeoutError:
            raise Overloaded(
                f"{self.in_flight} events are waiting to be made durable; retry later"
            ) from None
        finally:
            self._waiting -= 1

    def release(self, n: int) -> None:
        self.in_flight -= n
        if self._waiting:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()
