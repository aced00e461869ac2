"""One generator process: keep-alive connections posting stamped bodies at a paced rate.

Pacing is open-loop per slot: request k is due at `start + k / request_rate`; a worker that is
behind sends at once, so `concurrency` bounds how far the generator can fall behind.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field, fields

import aiohttp
import msgspec
import numpy as np

from streamscore.generate.workload import Workload


@dataclass
class Progress:
    """Counts since the last report; the parent adds them up."""

    requests: int = 0
    sent_events: int = 0
    acked_events: int = 0
    processed: int = 0
    rejected: int = 0
    duplicates: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    acked: list[tuple[int, int]] = field(default_factory=list)  # (first id, count) per 200

    def take(self) -> Progress:
        """The counts so far, leaving this one at zero."""
        snapshot = copy.copy(self)
        for f in fields(Progress):
            setattr(self, f.name, getattr(_ZERO, f.name).copy() if f.name in _LISTS else 0)
        return snapshot

    def add(self, other: Progress) -> None:
        for f in fields(Progress):
            if f.name == "errors":
                for kind, n in other.errors.items():
                    self.errors[kind] = self.errors.get(kind, 0) + n
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


_ZERO = Progress()
_LISTS = {"errors", "latencies", "acked"}


@dataclass(frozen=True)
class RunSpec:
    url: str
    rps: float  # events per second for this process; 0 = as fast as possible
    duration: float
    users: int
    batch_size: int
    concurrency: int
    ndjson: bool
    late_fraction: float
    seed: int
    event_ids: bool
    run_id: str
    first_id: int  # this process's event ids start here
    timeout: float = 30.0


async def run(spec: RunSpec, progress: Progress, stop: asyncio.Event | None = None) -> None:
    workload = Workload(
        users=spec.users,
        batch_size=spec.batch_size,
        late_fraction=spec.late_fraction,
        seed=spec.seed,
        ndjson=spec.ndjson,
        event_ids=spec.event_ids,
        run_id=spec.run_id,
    )
    interval = spec.batch_size / spec.rps if spec.rps > 0 else 0.0
    started = time.monotonic()
    deadline = started + spec.duration
    slots = iter(range(1 << 62))
    next_id = spec.first_id
    url = spec.url.rstrip("/") + "/ingest"
    headers = {"content-type": workload.content_type}
    connector = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_id
        while True:
            slot = next(slots)
            due = started + slot * interval
            now = time.monotonic()
            if due > deadline or now > deadline or (stop is not None and stop.is_set()):
                return
            if due > now:
                await asyncio.sleep(due - now)
            first = next_id
            next_id += spec.batch_size
            body = workload.body(time.time(), first)
            sent = time.perf_counter()
            kind = await _post(session, url, body, headers, progress)
            progress.latencies.append(time.perf_counter() - sent)
            progress.requests += 1
            progress.sent_events += spec.batch_size
            if kind is None:
                progress.acked_events += spec.batch_size
                progress.acked.append((first, spec.batch_size))
            else:
                progress.errors[kind] = progress.errors.get(kind, 0) + 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(spec.concurrency)))


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    progress: Progress,
) -> str | None:
    """None when acknowledged, else the kind of error."""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            if response.status != 200:
                return f"http_{response.status}"
            result = msgspec.json.decode(payload)
            progress.processed += result.get("processed", 0)
            progress.rejected += result.get("rejected", 0)
            progress.duplicates += result.get("duplicates", 0)
            return None
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientError as exc:
        return type(exc).__name__


def quantiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    values = np.quantile(np.asarray(latencies), [0.5, 0.95, 0.99])
    return {"p50": float(values[0]), "p95": float(values[1]), "p99": float(values[2])}
