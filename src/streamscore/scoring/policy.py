"""Batching policies for the scoring stage: how many events to put in one forward call, and how
long the oldest waiting event may be held back to fill it.

`AdaptivePolicy` (the default) decides from what it measures:

- the arrival rate `λ` (events/s over the last 100 ms),
- the processing time `t(n)` of a batch of `n`, fitted online by `TimeFit`,
- the cost model (`CostModel`): cost per event `c(n) = (F + V*n + P*t(n)) / n`.

For each candidate size it predicts the worst latency of an event in such a batch: the time to
fill it, `(n - 1) / λ`, plus its processing `t(n)`, plus the wait behind the previous batch
(M/D/1: `t(n) * u / (2(1 - u))` with utilisation `u = λ t(n) / n`). Among the sizes whose
prediction fits the `allowed` latency it takes the cheapest per event; the longest wait is the slack
that size leaves in the budget. If no size fits (overload), it takes the size with the most
throughput and does not wait. A backlog (more queued than the chosen size) is taken whole, up to
`max_batch`: those events are late already, and one large call drains them fastest. The measured p99 of (queueing wait + processing) closes the loop: every 0.2 s, `allowed` moves
by half the gap between the target (90 % of the budget) and the measured p99, within 10..90 %
of the budget: it plans for the target at most, and for less while measurements run over. That corrects for what the model does not see (GIL contention, the other
threads, timer slack) and lets the stage use the whole budget, which is where batches are
cheapest. A decision is recomputed at most every `DECIDE_EVERY` seconds.

Cold start: until `TimeFit` has `min_samples` batches, it dispatches whatever is queued at once
(no wait), which is the latency-safe choice.

`FixedPolicy(n, max_wait)` is the classic alternative (and the benchmark's baseline): batches
of `n`, or fewer once the oldest event has waited `max_wait`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from streamscore.scoring.cost import CostModel
from streamscore.scoring.time_fit import TimeFit

RATE_WINDOW = 0.1  # seconds of arrivals behind the rate estimate (short: bursts are seen)
LATENCY_WINDOW = 1.0  # seconds of batches behind the measured p99
FEEDBACK_EVERY = 0.2  # seconds between adjustments of the allowed latency
TARGET = 0.9  # of the budget: what the measured p99 is steered to (10 % for jitter)
DECIDE_EVERY = 0.005  # seconds a decision is reused


@dataclass(frozen=True, slots=True)
class Decision:
    size: int  # dispatch once this many events are queued
    max_wait: float  # or once the oldest queued event has waited this long (seconds)
    reason: str
    take: int = 0  # most events per batch (0: `size`); adaptive takes a backlog whole


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: int
    at: float  # wall-clock time the batch finished, UNIX s
    size: int
    target_size: int
    max_wait_ms: float
    wait_ms: float  # queueing wait of the oldest event in the batch
    processing_ms: float
    predicted_ms: float | None  # what the fit predicted before the batch ran
    cost: float
    cost_per_event: float
    high_priority: bool


class BatchingPolicy(ABC):
    """Shared bookkeeping: the time fit, the arrival rate, batch records, measured latency."""

    mode: str

    def __init__(
        self,
        budget: float,
        max_batch: int,
        cost: CostModel,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        records: int = 1000,
    ) -> None:
        self.budget = budget
        self.max_batch = max_batch
        self.cost = cost
        self.clock = clock
        self.wall = wall
        self.fit = TimeFit()
        self.batches = 0
        self.events = 0
        self.total_cost = 0.0
        self._arrivals: deque[tuple[float, int]] = deque()
        self._latencies: deque[tuple[float, np.ndarray, np.ndarray]] = deque()  # (t, lat, weight)
        self._records: deque[BatchRecord] = deque(maxlen=records)
        self._lock = threading.RLock()  # the scorer thread writes; API threads read

    # -- measurements ---------------------------------------------------------------------

    def arrived(self, events: int, now: float) -> None:
        with self._lock:
            self._arrivals.append((now, events))
            while self._arrivals[0][0] < now - RATE_WINDOW:
                self._arrivals.popleft()

    def rate(self, now: float) -> float:
        """Events per second over the last `RATE_WINDOW` seconds."""
        with self._lock:
            recent = [n for t, n in self._arrivals if t >= now - RATE_WINDOW]
        return sum(recent) / RATE_WINDOW

    def observe(
        self,
        decision: Decision,
        waits: np.ndarray,
        counts: np.ndarray,
        seconds: float,
        high_priority: bool = False,
    ) -> None:
        """Record one finished batch: the queueing wait of each of its slices (requests) with
        their event counts, and the forward call's processing time."""
        now = self.clock()
        size = int(counts.sum())
        predicted = float(self.fit.predict(size)) if self.fit.ready else None
        self.fit.add(size, seconds, now)
        cost = float(self.cost.cost(size, seconds))
        with self._lock:
            self._latencies.append((now, waits + seconds, counts))
            while self._latencies[0][0] < now - LATENCY_WINDOW:
                self._latencies.popleft()
            self.batches += 1
            self.events += size
            self.total_cost += cost
            record = BatchRecord(
                id=self.batches,
                at=self.wall(),
                size=size,
                target_size=decision.size,
                max_wait_ms=decision.max_wait * 1000,
                wait_ms=float(waits.max()) * 1000 if len(waits) else 0.0,
                processing_ms=seconds * 1000,
                predicted_ms=None if predicted is None else predicted * 1000,
                cost=cost,
                cost_per_event=cost / max(size, 1),
                high_priority=high_priority,
            )
            self._records.append(record)
        self._feedback(now)

    def _feedback(self, now: float) -> None:  # noqa: B027 (a hook, empty on purpose)
        """Adaptive policies correct themselves here; fixed ones do not."""

    def p99_latency(self) -> float | None:
        """p99 of (queueing wait + processing) over the events of the last second's batches."""
        with self._lock:
            batches = list(self._latencies)
        if not batches:
            return None
        latencies = np.concatenate([lat for _, lat, _ in batches])
        weights = np.concatenate([w for _, _, w in batches]).astype(np.float64)
        order = np.argsort(latencies)
        cumulative = np.cumsum(weights[order])
        return float(latencies[order][np.searchsorted(cumulative, 0.99 * cumulative[-1])])

    # -- reporting -------------------------------------------------------------------------

    def recent(self, limit: int) -> list[dict[str, object]]:
        with self._lock:
            records = list(self._records)[-limit:]
        return [asdict(r) for r in reversed(records)]

    def summary(self) -> dict[str, object]:
        now = self.clock()
        decision = self.decide(now)
        with self._lock:
            recent = [r for r in self._records if r.at >= self.wall() - 10]
            events = sum(r.size for r in recent)
            spent = sum(r.cost for r in recent)
        p99 = self.p99_latency()
        return {
            "mode": self.mode,
            "policy": {
                "target_size": decision.size,
                "max_wait_ms": decision.max_wait * 1000,
                "reason": decision.reason,
            },
            "latency_budget_ms": self.budget * 1000,
            "p99_latency_ms": None if p99 is None else p99 * 1000,
            "arrival_rate_eps": self.rate(now),
            "fit": {
                "ready": self.fit.ready,
                "intercept_ms": self.fit.intercept * 1000,
                "per_event_us": self.fit.slope * 1e6,
                "degree": self.fit.degree,
                "prediction_error": None if np.isnan(self.fit.error) else self.fit.error,
            },
            "cost_model": asdict(self.cost),
            "recent_cost_per_event": spent / events if events else None,
            "recent_mean_batch": events / len(recent) if recent else None,
            "batches": self.batches,
            "events": self.events,
            "total_cost": self.total_cost,
        }

    @abstractmethod
    def decide(self, now: float) -> Decision:
        """What to do at `now`: dispatch at how many queued events, or after how long a wait."""


class FixedPolicy(BatchingPolicy):
    mode = "fixed"

    def __init__(self, size: int, max_wait: float, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.size = size
        self.max_wait = max_wait

    def decide(self, now: float) -> Decision:
        return Decision(self.size, self.max_wait, f"fixed size {self.size}")


class AdaptivePolicy(BatchingPolicy):
    mode = "adaptive"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.allowed = 0.7 * self.budget  # latency the policy plans for, steered by feedback
        self._last_feedback = 0.0
        self._cached: tuple[float, Decision] | None = None
        self._candidates = np.unique(
            np.geomspace(1, self.max_batch, 256).round().astype(np.int64)
        ).astype(np.float64)

    def _feedback(self, now: float) -> None:
        if now - self._last_feedback < FEEDBACK_EVERY:
            return
        self._last_feedback = now
        p99 = self.p99_latency()
        if p99 is None:
            return
        gap = TARGET * self.budget - p99
        self.allowed = min(TARGET * self.budget, max(0.1 * self.budget, self.allowed + 0.5 * gap))
        self._cached = None

    def decide(self, now: float) -> Decision:
        if self._cached is not None and now - self._cached[0] < DECIDE_EVERY:
            return self._cached[1]
        decision = self._decide(now)
        if self.fit.ready:
            self._cached = (now, decision)
        return decision

    def _decide(self, now: float) -> Decision:
        if not self.fit.ready:
            return Decision(
                self.max_batch, 0.0, "cold start: dispatch what is queued", self.max_batch
            )
        rate = self.rate(now)
        n = self._candidates
        t = self.fit.predict(n)
        if rate <= 0:
            wait = max(0.0, self.allowed - float(t[0]))
            return Decision(1, wait, "idle", self.max_batch)
        rho = rate * t / n
        queueing = np.where(rho < 1, t * rho / (2 * (1 - np.minimum(rho, 0.999))), np.inf)
        latency = (n - 1) / rate + t + queueing
        allowed = self.allowed
        fits = (rho < 0.9) & (latency <= allowed)
        if not fits.any():
            best = int(np.argmin(t / n))  # overload: the most events per second of compute
            return Decision(int(n[best]), 0.0, "overloaded: maximum throughput", self.max_batch)
        per_event = self.cost.per_event_cost(n, t)
        choice = int(np.flatnonzero(fits)[np.argmin(per_event[fits])])
        wait = max(0.0, allowed - float(t[choice]) - float(queueing[choice]))
        return Decision(
            int(n[choice]), wait, "cheapest size within the latency budget", self.max_batch
        )
