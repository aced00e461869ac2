"""Backpressure: bounds on events accepted but not yet durable, and on request-body bytes being
read or decoded, shared by all requests.

A request that does not fit waits up to `max_wait` seconds for earlier ones to finish, then
gets `Overloaded` (503 with Retry-After). A batch (or body) larger than the whole bound is let
in alone, so no request is refused forever. Requests whose events are all `low` priority may
fill only `LOW_SHARE` of the event bound: under overload they wait, and are refused, first.
Once `close()` is called (SIGTERM), every new request is refused at once.

>>> import asyncio
>>> admission = Admission(max_in_flight=10, max_wait=0.01, max_bytes=100)
>>> async def demo():
...     await admission.acquire_bytes(80)
...     try:
...         await admission.acquire_bytes(30)
...     except Overloaded as exc:
...         print(exc)
...     admission.release_bytes(80)
...     await admission.acquire_bytes(30)
...     return admission.bytes_in_flight
>>> asyncio.run(demo())
80 body bytes are being read; retry later
30
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LOW_SHARE = 0.5


class Overloaded(RuntimeError):
    """The pipeline stayed full for `max_wait` seconds, or the service is shutting down."""


class Admission:
    def __init__(self, max_in_flight: int, max_wait: float, max_bytes: int = 256 << 20) -> None:
        self.max_in_flight = max_in_flight
        self.max_wait = max_wait
        self.max_bytes = max_bytes
        self.in_flight = 0
        self.bytes_in_flight = 0
        self.closing: str | None = None  # why new requests are refused (shutdown)
        self._waiting = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created lazily: it binds to the server's running loop
            self._changed = asyncio.Condition()
        return self._changed

    def close(self, reason: str) -> None:
        """Refuse every request from now on (thread-safe: a plain assignment)."""
        self.closing = reason

    def _fits(self, n: int, low: bool) -> bool:
        bound = self.max_in_flight * (LOW_SHARE if low else 1.0)
        return self.in_flight == 0 or self.in_flight + n <= bound

    async def acquire(self, n: int, low: bool = False) -> None:
        await self._wait_until(lambda: self._fits(n, low), self._events_full)
        self.in_flight += n

    async def room(self) -> None:
        """Wait for any room before reading a body, so overload is refused before it costs;
        the entry of every request, so the one place a closing service refuses it."""
        if self.closing:
            raise Overloaded(f"{self.closing}; retry on another instance")
        await self._wait_until(lambda: self.in_flight < self.max_in_flight, self._events_full)

    async def acquire_bytes(self, n: int) -> None:
        """Room for `n` more body bytes; pair with `release_bytes(n)` when they are processed."""
        await self._wait_until(
            lambda: self.bytes_in_flight == 0 or self.bytes_in_flight + n <= self.max_bytes,
            lambda: f"{self.bytes_in_flight} body bytes are being read; retry later",
        )
        self.bytes_in_flight += n

    def release_bytes(self, n: int) -> None:
        self.bytes_in_flight -= n
        self._wake()

    def _events_full(self) -> str:
        return f"{self.in_flight} events are waiting to be made durable; retry later"

    async def _wait_until(self, ready: Callable[[], bool], why: Callable[[], str]) -> None:
        if ready():
            return
        changed = self._condition()
        self._waiting += 1
        try:
            # `asyncio.timeout`, not `wait_for`: on Python 3.11 that one loses a cancellation
            # that comes as the room does, and a cancelled caller would go on.
            async with asyncio.timeout(self.max_wait), changed:
                await changed.wait_for(ready)
        except TimeoutError:
            raise Overloaded(why()) from None
        finally:
            self._waiting -= 1

    def release(self, n: int) -> None:
        self.in_flight -= n
        self._wake()

    def _wake(self) -> None:
        if self._waiting:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()
