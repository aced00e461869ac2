"""Leases between node objects in one process, each on its own NATS connection.

A watchdog samples every node's owned set (as its callbacks told it) every few milliseconds and
records any partition owned by two nodes at once: the central promise of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from streamscore.cluster.bus import Cluster, delete_cluster, open_cluster
from streamscore.cluster.leases import Leases, assign

from .conftest import PrivateNats, connect, wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.serial]  # serial: it times lease expiry

P = 16
# Shortened so the suite stays fast; STREAMSCORE_LONG=1 measures with the production defaults.
HEARTBEAT, DEAD_AFTER = (2.0, 6.0) if os.environ.get("STREAMSCORE_LONG") else (0.5, 2.0)
BOUND = DEAD_AFTER + 2 * HEARTBEAT  # the documented take-over bound


class Node:
    """A node as the service would run it: the callbacks keep the set it consumes."""

    def __init__(self, nc: Client, cluster: Cluster, node_id: str) -> None:
        self.nc = nc
        self.node_id = node_id
        self.consuming: set[int] = set()
        self.errors: list[str] = []
        self.leases = Leases(cluster, node_id, self.acquired, self.released, HEARTBEAT, DEAD_AFTER)

    async def acquired(self, partition: int) -> None:
        if partition in self.consuming:
            self.errors.append(f"acquired {partition} twice")
        self.consuming.add(partition)

    async def released(self, partition: int) -> None:
        if partition not in self.consuming:
            self.errors.append(f"released {partition} not held")
        self.consuming.discard(partition)


class Nodes:
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.all: list[Node] = []
        self.overlaps: list[tuple[int, list[str]]] = []

    async def add(self, node_id: str, **options: object) -> Node:
        nc = await connect(self.url, **options)
        node = Node(nc, await open_cluster(nc, self.name, partitions=P), node_id)
        await node.leases.start()
        self.all.append(node)
        return node

    def owners(self) -> dict[int, list[str]]:
        owners: dict[int, list[str]] = {p: [] for p in range(P)}
        for node in self.all:
            for p in node.consuming:
                owners[p].append(node.node_id)
        return owners

    def settled(self, node_ids: list[str]) -> bool:
        """Every partition owned by its target among `node_ids`, and by it alone."""
        target = assign(P, node_ids)
        return all(o == [target[p]] for p, o in self.owners().items())

    async def watchdog(self) -> None:
        while True:
            for p, owners in self.owners().items():
                if len(owners) > 1:
                    self.overlaps.append((p, owners))
            await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def nodes(name: str, url: str) -> AsyncIterator[Nodes]:
    group = Nodes(name, url)
    watchdog = asyncio.create_task(group.watchdog())
    try:
        yield group
    finally:
        watchdog.cancel()
        for node in group.all:
            if not node.leases._stopping.is_set():
                await node.leases.stop(release=False)
        admin = await connect(url)
        await delete_cluster(await open_cluster(admin, name, partitions=P))
        await admin.close()
        for node in group.all:
            await node.nc.close()
    assert group.overlaps == []
    assert [e for n in group.all for e in n.errors] == []


async def test_three_nodes_share_all_partitions(cluster_name: str) -> None:
    async with nodes(cluster_name, "nats://127.0.0.1:4222") as group:
        for name in ("a", "b", "c"):
            await group.add(name)
        await wait_until(lambda: group.settled(["a", "b", "c"]), timeout=5)
        assert all(node.consuming for node in group.all)
        for node in group.all:
            await node.leases.stop()
        assert group.owners() == {p: [] for p in range(P)}


async def test_a_silent_node_is_taken_over_within_the_bound(cluster_name: str) -> None:
    async with nodes(cluster_name, "nats://127.0.0.1:4222") as group:
        a, _ = await group.add("a"), await group.add("b")
        await wait_until(lambda: group.settled(["a", "b"]), timeout=5)
        lost = set(a.consuming)
        assert lost
        await a.nc.close()  # a crashes as far as the bus can tell; its process lingers
        took = await wait_until(lambda: group.settled(["b"]), timeout=BOUND + 3)
        print(f"take-over of {len(lost)} partitions after {took:.2f} s (bound {BOUND:.2f} s)")
        assert took <= BOUND + 1.5  # the margin is scheduling on a loaded 2-core machine


async def test_a_joining_node_gets_its_share_without_two_owners(cluster_name: str) -> None:
    async with nodes(cluster_name, "nats://127.0.0.1:4222") as group:
        await group.add("a")
        await group.add("b")
        await wait_until(lambda: group.settled(["a", "b"]), timeout=5)
        await group.add("c")
        joined = await wait_until(lambda: group.settled(["a", "b", "c"]), timeout=5)
        assert joined < 4 * HEARTBEAT + 0.5
        await group.all[0].leases.stop()  # a clean leave hands over without waiting
        left = await wait_until(lambda: group.settled(["b", "c"]), timeout=5)
        assert left < 2 * HEARTBEAT + 0.5


async def test_leases_survive_a_nats_restart(private_nats: PrivateNats) -> None:
    async with nodes("restart", private_nats.url) as group:
        node = await group.add(
            "a", allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.1
        )
        await wait_until(lambda: group.settled(["a"]), timeout=5)
        private_nats.stop()
        # Out of touch with the bus, the node fences itself: it may no longer be the owner.
        await wait_until(lambda: not node.consuming, timeout=DEAD_AFTER / 2 + 3 * HEARTBEAT)
        restarted = time.monotonic()
        private_nats.start()
        await wait_until(lambda: group.settled(["a"]), timeout=10)
        print(f"leases re-validated {time.monotonic() - restarted:.2f} s after the restart")
