"""One place that reads the service's state for every reader: `/stats`, `/metrics`, the
dashboard's samples and its median histogram.

Aggregates over all users (every user's median, their median) cost O(users) under the windows
lock, so they are computed at most once per `interval` and shared by every reader, however many
pages or scrapers are open.

The simulator's users (`SIMULATED_PREFIX`) are left out of `/stats`' `median_of_medians` unless
asked (`include_simulated`), so a demo never skews what real users see. The dashboard, where
the simulator is started and watched, counts them.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from streamscore.events import SIMULATED_PREFIX

if TYPE_CHECKING:
    from streamscore.service import Service


NO_EVENT = 0.0  # stream time starts far below any accepted timestamp (-1e300): no event yet


class Gauges:
    def __init__(self, service: Service, interval: float = 1.0) -> None:
        self.service = service
        self.interval = interval
        self._lock = threading.Lock()
        self._medians: dict[bool, tuple[float, np.ndarray]] = {}  # by include_simulated

    def medians(self, include_simulated: bool = True) -> np.ndarray:
        """Every user's current median (users with an empty window left out), at most
        `interval` seconds old."""
        with self._lock:
            now = time.monotonic()
            computed, values = self._medians.get(include_simulated, (-np.inf, np.zeros(0)))
            if now - computed >= self.interval:
                prefix = None if include_simulated else SIMULATED_PREFIX
                values = self.service.windows.medians(exclude_prefix=prefix)
                self._medians[include_simulated] = (now, values)
            return values

    def median_of_medians(self, include_simulated: bool = False) -> float | None:
        medians = self.medians(include_simulated)
        return float(np.median(medians)) if len(medians) else None

    def stats(self, include_simulated: bool = False) -> dict[str, object]:
        s = self.service
        c = s.counters
        clock = s.clock
        return {
            "status": "ok",
            "event_count": c.events,
            "events_processed": c.events,
            "users_tracked": s.windows.users,
            "median_of_medians": self.median_of_medians(include_simulated),
            "ingest_requests": c.ingest_requests,
            "median_requests": c.median_requests,
            "history_requests": c.history_requests,
            "avg_ingest_latency_seconds": c.ingest_latency.mean,
            "p50_ingest_latency_seconds": c.ingest_latency.quantile(0.5),
            "p99_ingest_latency_seconds": c.ingest_latency.quantile(0.99),
            "rejected_events": c.rejected,
            "late_events": c.late,
            "duplicate_events": c.duplicates,
            "windowed_events": s.windows.events,
            "window_bytes": s.windows.memory_bytes(),
            "stream_time": clock.time if clock.time > NO_EVENT else None,
            "window_seconds": clock.window,
            "in_flight_events": s.admission.in_flight,
            "index_lag_events": s.committer.index_lag,
            "model_version": s.scorer.version,
            "uptime_seconds": time.time() - s.started_at,
            "recovery_seconds": s.recovery_seconds,
        }

    def vital_signs(self) -> dict[str, float | None]:
        """What the dashboard samples each second."""
        s = self.service
        c = s.counters
        batching = s.policy.summary()
        answered = c.ingest_requests > 0
        return {
            "events": c.events,
            "users": s.windows.users,
            "median_of_medians": self.median_of_medians(include_simulated=True),
            "ingest_p50_ms": c.ingest_latency.quantile(0.5) * 1000 if answered else None,
            "ingest_p99_ms": c.ingest_latency.quantile(0.99) * 1000 if answered else None,
            "rejected": c.rejected,
            "late": c.late,
            "duplicates": c.duplicates,
            "batch_mean": batching["recent_mean_batch"],  # type: ignore[dict-item]
            "batch_target": batching["policy"]["target_size"],  # type: ignore[index]
            "cost_per_event": batching["recent_cost_per_event"],  # type: ignore[dict-item]
        }

    def prometheus(self) -> dict[str, float]:
        """Gauges exported at scrape time, as `streamscore_<name>`."""
        s = self.service
        batching = s.policy.summary()
        decision, fit = batching["policy"], batching["fit"]
        p99, per_event = batching["p99_latency_ms"], batching["recent_cost_per_event"]
        return {
            "batching_target_size": decision["target_size"],  # type: ignore[index]
            "batching_max_wait_seconds": decision["max_wait_ms"] / 1000,  # type: ignore[index]
            "batching_p99_latency_seconds": (p99 or 0.0) / 1000,  # type: ignore[operator]
            "batching_arrival_rate_eps": batching["arrival_rate_eps"],  # type: ignore[dict-item]
            "batching_fit_intercept_seconds": fit["intercept_ms"] / 1000,  # type: ignore[index]
            "batching_fit_per_event_seconds": fit["per_event_us"] / 1e6,  # type: ignore[index]
            "batching_prediction_error": fit["prediction_error"] or 0.0,  # type: ignore[index]
            "batching_cost_per_event": per_event or 0.0,  # type: ignore[dict-item]
            "batching_cost": s.policy.total_cost,
            "in_flight_events": s.admission.in_flight,
            "index_lag_events": s.committer.index_lag,
            "window_users": s.windows.users,
            "window_events": s.windows.events,
            "dedupe_ids": len(s.deduper),
            "dedupe_bytes": s.deduper.memory_bytes(),
            "dedupe_evicted_early": s.deduper.evicted_early,
            "log_commits_evicted_early": s.committer.log_evicted_early,
            "dead_letters_dropped": s.dead_letters.dropped,
            "retention_deleted_events": s.indexer.retention_deleted,
            "indexer_up": float(s.indexer.alive),
            "indexer_restarts": s.indexer.restarts,
            "stream_time_seconds": s.clock.time if s.clock.time > NO_EVENT else 0.0,
            "scoring_thread_up": float(s.scoring.alive),
            "commit_thread_up": float(s.committer.alive),
            "pipeline_crashes": s.scoring.crashes + s.committer.crashes,
        }
