"""Prometheus metrics, in a registry of the service's own.

Hot-path counts are not incremented twice: totals the service already keeps (`Counters`, window
sizes, queue depths) are read at scrape time by a collector. Only distributions (batch sizes,
inference and commit times, request latency) are observed as they happen, once per batch or
request, never per event. Failures are counted per failed forward call or group commit, so
one store outage shows how many writes it cost, not only how many requests it refused.

>>> m = Metrics()
>>> m.store_failures.inc()
>>> b"streamscore_store_failures_total 1.0" in m.exposition()
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from streamscore.telemetry.counters import Counters

SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
EVENTS = (1, 8, 32, 128, 512, 1024, 2048, 4096, 8192, 16384, 65536)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.batch_size = Histogram(
            "streamscore_batch_size_events", "events per forward call", buckets=EVENTS, registry=r
        )
        self.inference_seconds = Histogram(
            "streamscore_inference_seconds", "time of one forward call", buckets=SECONDS, registry=r
        )
        self.commit_seconds = Histogram(
            "streamscore_store_commit_seconds",
            "time of one group commit (append + fsync)",
            buckets=SECONDS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "streamscore_request_duration_seconds",
            "HTTP request latency by endpoint and status code (its _count: requests)",
            ["endpoint", "status"],
            buckets=SECONDS,
            registry=r,
        )
        self.rejected = Counter(
            "streamscore_events_rejected", "rejected events by reason", ["reason"], registry=r
        )
        self.scoring_failures = Counter(
            "streamscore_scoring_failures",
            "forward calls that failed (the model or a bug): their requests are answered 500",
            registry=r,
        )
        self.store_failures = Counter(
            "streamscore_store_failures",
            "group commits the store refused: their requests are answered 503",
            registry=r,
        )
        self.refusals = Counter(
            "streamscore_refusals",
            "requests refused, by reason: overloaded, shutting_down, ack_timeout, "
            "store_unavailable, scoring_failed, rate_limited, too_large, body_timeout, "
            "bad_body, unauthenticated, forbidden",
            ["reason"],
            registry=r,
        )

    def watch(
        self, read: Callable[[], dict[str, float]], counters: Counters, model: Callable[[], str]
    ) -> None:
        """Export the service's own totals and gauges, read at scrape time."""
        self.registry.register(_Totals(read, counters, model))

    def watch_models(
        self,
        versions: Callable[[], list[tuple[str, int, float]]],
        variants: Callable[[], list[tuple[str, str, int, int, int]]],
    ) -> None:
        """Per model version (events, seconds) and per experiment variant (users, events,
        conversions) counters, read at scrape time."""
        self.registry.register(_Models(versions, variants))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Totals(Collector):
    def __init__(
        self, read: Callable[[], dict[str, float]], counters: Counters, model: Callable[[], str]
    ) -> None:
        self.read = read
        self.counters = counters
        self.model = model

    def collect(self) -> Iterator[object]:
        c = self.counters
        for name, help_text, value in (
            ("streamscore_events_ingested", "events scored and stored", c.events),
            ("streamscore_events_late", "stored events older than the window", c.late),
            ("streamscore_events_duplicate", "events skipped for a known event_id", c.duplicates),
            ("streamscore_ingest_requests", "ingest requests answered 200", c.ingest_requests),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        for name, value in self.read().items():
            yield GaugeMetricFamily(f"streamscore_{name}", name.replace("_", " "), value=value)
        yield InfoMetricFamily("streamscore_model", "model in use", value={"version": self.model()})


class _Models(Collector):
    def __init__(
        self,
        versions: Callable[[], list[tuple[str, int, float]]],
        variants: Callable[[], list[tuple[str, str, int, int, int]]],
    ) -> None:
        self.versions = versions
        self.variants = variants

    def collect(self) -> Iterator[object]:
        events = CounterMetricFamily(
            "streamscore_model_events", "events scored by model version", labels=["version"]
        )
        seconds = CounterMetricFamily(
            "streamscore_model_scoring_seconds",
            "forward-call seconds by model version",
            labels=["version"],
        )
        for version, n, spent in self.versions():
            events.add_metric([version], n)
            seconds.add_metric([version], spent)
        yield events
        yield seconds
        labels = ["experiment", "variant"]
        families = [
            CounterMetricFamily(f"streamscore_experiment_{what}", help_text, labels=labels)
            for what, help_text in (
                ("users", "users exposed, by experiment variant"),
                ("events", "events observed, by experiment variant"),
                ("conversions", "users converted, by experiment variant"),
            )
        ]
        for experiment, variant, *values in self.variants():
            for family, value in zip(families, values, strict=True):
                family.add_metric([experiment, variant], value)
        yield from families
