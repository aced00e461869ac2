"""The batching controller: fitting, decisions, drift and priorities, on synthetic cost
functions with an injected clock (deterministic), plus the policy at work in a real server."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamscore.batching.controller import AdaptiveBatching, FixedBatching
from streamscore.batching.cost import CostModel
from streamscore.batching.pending import HIGH, LOW, NORMAL, Pending, PendingQueue
from streamscore.batching.time_fit import TimeFit
from streamscore.pipeline.admission import Admission, Overloaded

from .conftest import Server, wait_until

COST = CostModel(per_batch=1e-7, per_event=1e-10, per_second=1.4e-5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def linear(a: float, b: float):  # type: ignore[no-untyped-def]
    return lambda n: a + b * n


def feed(fit: TimeFit, cost, sizes, now: float, rng: np.random.Generator, noise: float = 0.02):  # type: ignore[no-untyped-def]
    """Batches of `sizes` taking `cost(n)` (with noise), 10 ms apart from `now`."""
    for i, n in enumerate(sizes):
        fit.add(int(n), cost(n) * (1 + noise * rng.standard_normal()), now + i * 0.01)


def test_fit_recovers_the_fixed_and_per_event_parts_through_noise_and_outliers() -> None:
    rng = np.random.default_rng(1)
    fit = TimeFit()
    sizes = rng.integers(1, 4096, 200)
    feed(fit, linear(80e-6, 0.4e-6), sizes, 0.0, rng)
    fit.add(100, 0.05, 0.0)  # a GC pause: 50 ms for 100 events
    assert fit.degree == 1
    assert fit.intercept == pytest.approx(80e-6, rel=0.15)
    assert fit.slope == pytest.approx(0.4e-6, rel=0.05)


def test_quadratic_term_only_when_it_predicts_better() -> None:
    rng = np.random.default_rng(2)
    curved = TimeFit()
    feed(curved, lambda n: 50e-6 + 0.1e-6 * n + 2e-10 * n * n, rng.integers(1, 8192, 200), 0, rng)
    assert curved.degree == 2
    assert float(curved.predict(8000)) == pytest.approx(50e-6 + 0.8e-3 + 2e-10 * 64e6, rel=0.05)
    straight = TimeFit()
    feed(straight, linear(50e-6, 0.1e-6), rng.integers(1, 8192, 200), 0, rng)
    assert straight.degree == 1


def test_fit_follows_a_slower_machine_within_seconds() -> None:
    rng = np.random.default_rng(3)
    fit = TimeFit(horizon=5.0)
    for second in range(10):
        feed(fit, linear(50e-6, 0.5e-6), rng.integers(1, 2048, 50), second, rng)
    assert float(fit.predict(1000)) == pytest.approx(550e-6, rel=0.05)
    for second in range(10, 17):  # another process now takes half the CPU: everything 2x
        feed(fit, linear(100e-6, 1e-6), rng.integers(1, 2048, 50), second, rng)
        if second == 16:
            assert float(fit.predict(1000)) == pytest.approx(1100e-6, rel=0.05)


def test_fit_with_one_repeated_size_follows_the_level() -> None:
    rng = np.random.default_rng(4)
    fit = TimeFit(horizon=2.0)
    feed(fit, linear(50e-6, 0.5e-6), rng.integers(1, 2048, 100), 0.0, rng)
    feed(fit, linear(150e-6, 1.5e-6), [1000] * 100, 5.0, rng)  # 3x slower, one size only
    assert float(fit.predict(1000)) == pytest.approx(1650e-6, rel=0.05)


def trained(clock: Clock, a: float = 50e-6, b: float = 0.5e-6, **kwargs) -> AdaptiveBatching:  # type: ignore[no-untyped-def]
    controller = AdaptiveBatching(budget=0.02, max_batch=8192, cost=COST, clock=clock, **kwargs)
    rng = np.random.default_rng(5)
    for n in rng.integers(1, 8192, 64):
        controller.fit.add(int(n), a + b * n, clock())
    return controller


def arrive(controller: AdaptiveBatching, clock: Clock, rate: float, seconds: float = 0.5) -> None:
    steps = 100
    for i in range(steps):
        controller.arrived(round(rate * seconds / steps), clock.now - seconds + i * seconds / steps)


def brute_force_choice(controller: AdaptiveBatching, rate: float) -> int:
    """The cheapest size whose predicted latency fits, by enumerating every size 1..max."""
    best, best_cost = None, np.inf
    for n in range(1, controller.max_batch + 1):
        t = float(controller.fit.predict(n))
        u = rate * t / n
        if u >= 0.9:
            continue
        latency = (n - 1) / rate + t + t * u / (2 * (1 - u))
        cost = float(COST.per_event_cost(n, t))
        if latency <= controller.allowed and cost < best_cost:
            best, best_cost = n, cost
    assert best is not None
    return best


def test_cold_start_dispatches_what_is_queued() -> None:
    controller = AdaptiveBatching(budget=0.02, max_batch=8192, cost=COST, clock=Clock())
    policy = controller.policy(1000.0)
    assert policy.max_wait == 0 and policy.size == 8192 and "cold start" in policy.reason


@pytest.mark.parametrize("rate", [2_000.0, 50_000.0, 400_000.0])
def test_choice_is_the_cheapest_size_within_the_budget(rate: float) -> None:
    clock = Clock()
    controller = trained(clock)
    arrive(controller, clock, rate)
    policy = controller.policy(clock.now)
    assert controller.rate(clock.now) == pytest.approx(rate, rel=0.05)
    best = brute_force_choice(controller, controller.rate(clock.now))
    chosen_cost = float(COST.per_event_cost(policy.size, controller.fit.predict(policy.size)))
    best_cost = float(COST.per_event_cost(best, controller.fit.predict(best)))
    assert chosen_cost <= best_cost * 1.03  # a grid of 256 sizes: within 3 % of the optimum
    t = float(controller.fit.predict(policy.size))
    assert (policy.size - 1) / controller.rate(clock.now) + t <= controller.allowed
    assert 0 <= policy.max_wait <= controller.allowed - t + 1e-9


def test_trickle_waits_for_company_but_never_past_the_budget() -> None:
    clock = Clock()
    controller = trained(clock)
    arrive(controller, clock, 40.0)
    policy = controller.policy(clock.now)
    assert policy.size <= 2
    assert 0.005 < policy.max_wait < 0.02


def test_overload_takes_maximum_throughput_without_waiting() -> None:
    clock = Clock()
    controller = trained(clock, a=50e-6, b=5e-6)  # at most ~200k events/s at any size
    arrive(controller, clock, 1_000_000.0)
    policy = controller.policy(clock.now)
    assert policy.max_wait == 0 and policy.size == 8192 and "overloaded" in policy.reason


def test_measured_latency_over_budget_shrinks_the_batches() -> None:
    clock = Clock()
    controller = trained(clock)
    arrive(controller, clock, 50_000.0)
    before = controller.policy(clock.now)
    for _ in range(10):  # the model says 2 ms, but events really wait 30 ms (contention)
        clock.now += 0.25
        arrive(controller, clock, 50_000.0)
        controller.observe(before, np.array([0.03]), np.array([before.size]), 0.002)
    after = controller.policy(clock.now)
    assert controller.allowed < 0.7 * 0.02 and after.size < before.size


def test_batch_records_and_summary_report_cost() -> None:
    clock = Clock()
    controller = FixedBatching(64, 0.01, budget=0.02, max_batch=8192, cost=COST, clock=clock)
    policy = controller.policy(clock.now)
    for _ in range(20):
        controller.observe(policy, np.array([0.004, 0.001]), np.array([40, 24]), 0.001)
    recent = controller.recent(5)
    assert [r["id"] for r in recent] == [20, 19, 18, 17, 16]
    assert recent[0]["size"] == 64 and recent[0]["wait_ms"] == pytest.approx(4.0)
    assert recent[0]["cost"] == pytest.approx(1e-7 + 64e-10 + 1.4e-5 * 0.001)
    assert recent[0]["predicted_ms"] == pytest.approx(1.0)  # fitted from the first 16
    summary = controller.summary()
    assert summary["mode"] == "fixed" and summary["batches"] == 20 and summary["events"] == 1280
    assert summary["p99_latency_ms"] == pytest.approx(5.0)


@given(
    st.lists(
        st.tuples(st.integers(1, 50), st.sampled_from([LOW, NORMAL, HIGH])), min_size=1, max_size=30
    ),
    st.integers(1, 64),
)
def test_pending_slices_cover_every_request_once_highest_priority_first(requests, size) -> None:  # type: ignore[no-untyped-def]
    queue = PendingQueue()
    items = [
        Pending(job=i, features=np.zeros((n, 1), "f4"), arrived=float(i), priority=p)
        for i, (n, p) in enumerate(requests)
    ]
    for item in items:
        queue.add(item)
    covered: dict[int, list[tuple[int, int]]] = {}
    order = []
    while queue.events:
        slices = queue.take(size)
        assert 0 < sum(b - a for _, a, b in slices) <= size
        for p, a, b in slices:
            covered.setdefault(p.job, []).append((a, b))  # type: ignore[arg-type]
            order.append((-p.priority, p.job))
    for item in items:
        spans = covered[item.job]  # type: ignore[index]
        assert spans[0][0] == 0 and spans[-1][1] == item.size
        assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    firsts = list(dict.fromkeys(order))
    assert firsts == sorted(firsts)  # by priority, then arrival


def test_low_priority_is_refused_first_under_overload() -> None:
    async def scenario() -> None:
        admission = Admission(max_in_flight=100, max_wait=0.05)
        await admission.acquire(60)
        with pytest.raises(Overloaded):
            await admission.acquire(10, low=True)  # low may fill only half the bound
        await admission.acquire(30)  # normal still fits

    asyncio.run(scenario())


def test_high_priority_is_never_held_back_to_fill_a_batch(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(batching="fixed", batch_size=100_000, batch_max_wait=3)
    now = time.time()
    with server.client() as client:
        for priority, most in (("high", 1.0), ("normal", None)):
            event = {"user_id": "p", "timestamp": now, "features": [1, 2, 3]}
            started = time.monotonic()
            r = client.post("/ingest", json={"events": [{**event, "priority": priority}]})
            took = time.monotonic() - started
            assert r.status_code == 200
            if most:
                assert took < most, "a high-priority event is scored at once"
            else:
                assert took >= 2.9, "a fixed policy holds a normal event to fill its batch"
        r = client.post("/ingest", json={"events": [{**event, "priority": "urgent"}]})
        assert "Invalid enum value 'urgent'" in r.json()["errors"][0]["error"]


def test_batching_endpoints_and_metrics_on_a_real_server(server: Server) -> None:
    now = time.time()
    with server.client() as client:

        def ingest(i: int) -> httpx.Response:
            events = [
                {"user_id": f"b{j}", "timestamp": now, "features": [i, j, 1]}
                for j in range(i % 50 + 1)
            ]
            return client.post("/ingest", json={"events": events})

        for i in range(60):
            assert ingest(i).status_code == 200
        summary = client.get("/batching").json()
        assert summary["mode"] == "adaptive" and summary["fit"]["ready"] is True
        assert summary["batches"] >= 16 and summary["events"] == sum(i % 50 + 1 for i in range(60))
        assert summary["latency_budget_ms"] == 20.0 and summary["recent_cost_per_event"] > 0
        recent = client.get("/batches/recent", params={"limit": 3}).json()["batches"]
        assert len(recent) == 3 and recent[0]["id"] > recent[1]["id"]
        assert recent[0]["predicted_ms"] is not None and recent[0]["cost_per_event"] > 0
        assert client.get("/batches/recent", params={"limit": 0}).status_code == 422
        metrics = wait_until(lambda: client.get("/metrics").text)
        for name in ("batching_target_size", "batching_cost_per_event", "batching_fit_per_event"):
            assert f"streamscore_{name}" in metrics
