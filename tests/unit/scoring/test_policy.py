"""The batching policy: fitting, decisions and drift, on synthetic cost functions with an
injected clock (deterministic)."""

from __future__ import annotations

import numpy as np
import pytest

from streamscore.scoring.cost import CostModel
from streamscore.scoring.policy import AdaptivePolicy, FixedPolicy
from streamscore.scoring.time_fit import TimeFit

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


def trained(clock: Clock, a: float = 50e-6, b: float = 0.5e-6, **kwargs) -> AdaptivePolicy:  # type: ignore[no-untyped-def]
    controller = AdaptivePolicy(budget=0.02, max_batch=8192, cost=COST, clock=clock, **kwargs)
    rng = np.random.default_rng(5)
    for n in rng.integers(1, 8192, 64):
        controller.fit.add(int(n), a + b * n, clock())
    return controller


def arrive(controller: AdaptivePolicy, clock: Clock, rate: float, seconds: float = 0.5) -> None:
    steps = 100
    for i in range(steps):
        controller.arrived(round(rate * seconds / steps), clock.now - seconds + i * seconds / steps)


def brute_force_choice(controller: AdaptivePolicy, rate: float) -> int:
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
    controller = AdaptivePolicy(budget=0.02, max_batch=8192, cost=COST, clock=Clock())
    policy = controller.decide(1000.0)
    assert policy.max_wait == 0 and policy.size == 8192 and "cold start" in policy.reason


@pytest.mark.parametrize("rate", [2_000.0, 50_000.0, 400_000.0])
def test_choice_is_the_cheapest_size_within_the_budget(rate: float) -> None:
    clock = Clock()
    controller = trained(clock)
    arrive(controller, clock, rate)
    policy = controller.decide(clock.now)
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
    policy = controller.decide(clock.now)
    assert policy.size <= 2
    assert 0.005 < policy.max_wait < 0.02


def test_overload_takes_maximum_throughput_without_waiting() -> None:
    clock = Clock()
    controller = trained(clock, a=50e-6, b=5e-6)  # at most ~200k events/s at any size
    arrive(controller, clock, 1_000_000.0)
    policy = controller.decide(clock.now)
    assert policy.max_wait == 0 and policy.size == 8192 and "overloaded" in policy.reason


def test_measured_latency_over_budget_shrinks_the_batches() -> None:
    clock = Clock()
    controller = trained(clock)
    arrive(controller, clock, 50_000.0)
    before = controller.decide(clock.now)
    for _ in range(10):  # the model says 2 ms, but events really wait 30 ms (contention)
        clock.now += 0.25
        arrive(controller, clock, 50_000.0)
        controller.observe(before, np.array([0.03]), np.array([before.size]), 0.002)
    after = controller.decide(clock.now)
    assert controller.allowed < 0.7 * 0.02 and after.size < before.size


def test_batch_records_and_summary_report_cost() -> None:
    clock = Clock()
    controller = FixedPolicy(64, 0.01, budget=0.02, max_batch=8192, cost=COST, clock=clock)
    policy = controller.decide(clock.now)
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
