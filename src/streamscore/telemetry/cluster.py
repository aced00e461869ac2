"""A cluster node's Prometheus series: what it ingested, what its partitions stored, which
partitions it owns and how long their take-overs took. Every series carries `node`, so one
Prometheus scraping all nodes (deploy/cluster) sums them into the cluster's figures."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from streamscore.cluster.node import ClusterNode


class ClusterCollector:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def collect(self) -> Iterator[object]:
        node = self.node
        labels = [node.node_id or ""]
        c = node.counters
        for name, value, text in (
            ("ingested_events", c.events, "events this node published to the bus (acknowledged)"),
            ("duplicate_events", c.duplicates, "events this node found already on the bus"),
            ("late_events", c.late, "events this node judged late"),
            ("stored_events", node.stored_events, "events this node's partitions committed"),
        ):
            family = CounterMetricFamily(f"streamscore_cluster_{name}", text, labels=["node"])
            family.add_metric(labels, value)
            yield family
        owned = GaugeMetricFamily(
            "streamscore_cluster_partition_owned",
            "1 for each partition this node owns (caught up with its history)",
            labels=["node", "partition"],
        )
        takeover = GaugeMetricFamily(
            "streamscore_cluster_takeover_seconds",
            "seconds from lease to caught-up state, per partition this node took",
            labels=["node", "partition"],
        )
        for partition, owner in sorted(node.owners.items()):
            if owner.caught_up:
                owned.add_metric([*labels, str(partition)], 1)
        for partition, seconds in sorted(node.takeover_seconds.items()):
            takeover.add_metric([*labels, str(partition)], seconds)
        yield owned
        yield takeover
        clock = node.stream_time
        time = GaugeMetricFamily(
            "streamscore_cluster_stream_time", "the cluster's stream time (UNIX s)", labels=["node"]
        )
        if clock is not None and math.isfinite(clock.time):
            time.add_metric(labels, clock.time)
        yield time
