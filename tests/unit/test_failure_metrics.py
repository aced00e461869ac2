"""Issue 13 item 18: scoring and store failures are counted per failed call, not per request."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from streamscore.telemetry.metrics import Metrics


def test_failure_counters_are_exported_from_zero() -> None:
    metrics = Metrics()
    metrics.scoring_failures.inc()
    metrics.store_failures.inc(2)
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    assert values["streamscore_scoring_failures_total"] == 1
    assert values["streamscore_store_failures_total"] == 2
