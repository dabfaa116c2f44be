"""Benchmark: a wake of 100 nodes in 5 dependency levels with a stagger, against its floor.

Each node is powered by a scripted driver that "boots" a fixed time after its power-on and is then
read back as on (verification by query, like a PDU outlet or a BMC). The plan comes from the same code
a cluster wake uses (mko.wol.plan.levels: each level's nodes depend on one node of the level below),
and the wake runs through mko.power.base.power_on_levels: a level starts when the one before it is
verified up, and within a level the power-ons are STAGGER seconds apart.

The floor is what the order itself costs: Σ over levels of (nodes in level − 1) × stagger + boot time.
The figure is the measured wall time and its ratio to the floor (the overhead of verification polling
and scheduling). Reports figures; never fails on time. Run with ``python bench/power_order.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from mko.platform.db.models.inventory import NodeRole
from mko.power.base import Capability, NodeSnapshot, PowerDriver, PowerState, WakeSchedule, power_on_levels
from mko.wol.plan import describe_levels, levels

NODES = 100
LEVELS = 5
STAGGER = 0.05
BOOT = 0.2


class Booting(PowerDriver):
    """Powers a node on at once; it reads as on BOOT seconds later."""

    name: ClassVar[str] = "bench"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.ON, Capability.QUERY})
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True

    def __init__(self) -> None:
        self.on_at: dict[int, float] = {}

    async def _on(self, node: NodeSnapshot) -> None:
        self.on_at.setdefault(node.node_id, asyncio.get_running_loop().time())

    async def query(self, node: NodeSnapshot) -> PowerState:
        at = self.on_at.get(node.node_id)
        up = at is not None and asyncio.get_running_loop().time() - at >= BOOT
        return PowerState.ON if up else PowerState.OFF


def build() -> tuple[list[NodeSnapshot], dict[int, set[int]]]:
    per_level = NODES // LEVELS
    nodes = [
        NodeSnapshot(
            i, f"n{i:03d}", "127.0.0.1", NodeRole.CONTROL_PLANE if i == 1 else NodeRole.WORKER, "bench", 9
        )
        for i in range(1, NODES + 1)
    ]
    # Node i of level k depends on node i of level k-1 (a storage chain: NAS → cache → workers ...).
    edges = {i: {i - per_level} for i in range(per_level + 1, NODES + 1)}
    return nodes, edges


async def run() -> None:
    nodes, edges = build()
    planned = levels(nodes, edges)
    floor = sum((len(level) - 1) * STAGGER + BOOT for level in planned)
    print(f"plan: {NODES} nodes in {len(planned)} levels, stagger {STAGGER:g} s, boot {BOOT:g} s")
    for level in describe_levels(planned, edges, STAGGER):
        first, last = level["nodes"][0], level["nodes"][-1]
        begin = f"{first['hostname']} +{first['starts_after']:g} s"
        spread = f"{begin} … {last['hostname']} +{last['starts_after']:g} s"
        print(f"  level {level['level']}: {len(level['nodes'])} nodes ({spread})")
    driver = Booting()
    schedule = WakeSchedule(retries=1, delay=0.0, wait=True, timeout=60, probe_interval=0.01, stagger=STAGGER)
    started = time.perf_counter()
    outcomes = await power_on_levels(planned, schedule, lambda: lambda _n: driver, None, edges)
    elapsed = time.perf_counter() - started
    up = sum(1 for o in outcomes if o.state.value == "up")
    print(f"  measured       {elapsed:7.3f} s   {up}/{NODES} up, every level verified before the next")
    print(f"  floor          {floor:7.3f} s   Σ levels ((nodes − 1) × stagger + boot)")
    print(f"  ratio          {elapsed / floor:7.3f}   (overhead of verification polling and scheduling)")


if __name__ == "__main__":
    asyncio.run(run())
