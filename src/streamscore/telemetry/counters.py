"""The service's counters, shared by the HTTP handlers (event loop) and the writer thread.

Each counter has one writing thread, so plain attributes suffice under the GIL. `events`, `late`
and `duplicates` are restored from the store at startup; request counts and `rejected` are
counted since the process started.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamscore.telemetry.latency import LatencyWindow


@dataclass
class Counters:
    events: int = 0
    late: int = 0
    duplicates: int = 0
    rejected: int = 0
    ingest_requests: int = 0
    median_requests: int = 0
    history_requests: int = 0
    ingest_latency: LatencyWindow = field(default_factory=LatencyWindow)
