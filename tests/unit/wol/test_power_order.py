"""The order of a wake: dependency levels (cycles refused), stagger between power-ons, a gap per device,
and a level that starts only when the one before it is up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

import pytest

from mko.platform.db.models.inventory import NodeRole
from mko.platform.errors import InputError
from mko.power.base import (
    Capability,
    NodeSnapshot,
    OutcomeState,
    PowerDriver,
    PowerState,
    WakeSchedule,
    power_on,
    power_on_levels,
)
from mko.wol.plan import describe_levels, levels

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _node(node_id: int, role: NodeRole = NodeRole.WORKER) -> NodeSnapshot:
    return NodeSnapshot(node_id, f"n{node_id}", "127.0.0.1", role, "scripted", 9)


class Outlets(PowerDriver):
    """A PDU-like driver: nodes 1-3 share device "pdu-a", the others have their own; power follows calls
    and is read back; node ids in ``dead`` never come on."""

    name: ClassVar[str] = "scripted"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.ON, Capability.QUERY})
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True

    def __init__(self, dead: Sequence[int] = ()) -> None:
        self.dead = set(dead)
        self.on: dict[int, float] = {}  # node → loop time it was switched on
        self.started = asyncio.get_running_loop().time()

    def device_key(self, node: NodeSnapshot) -> str | None:
        return "pdu-a" if node.node_id <= 3 else None

    async def _on(self, node: NodeSnapshot) -> None:
        if node.node_id not in self.dead:
            self.on[node.node_id] = asyncio.get_running_loop().time() - self.started

    async def query(self, node: NodeSnapshot) -> PowerState:
        return PowerState.ON if node.node_id in self.on else PowerState.OFF


def test_levels_follow_dependencies_control_planes_first_within_a_level() -> None:
    nodes = [_node(1), _node(2, NodeRole.CONTROL_PLANE), _node(3), _node(4), _node(5)]
    # 4 and 5 need the NAS (1); 3 needs 4; 2 needs nothing; 9 is outside the wake and ignored.
    edges = {4: {1}, 5: {1, 9}, 3: {4}}
    planned = levels(nodes, edges)
    assert [[n.node_id for n in level] for level in planned] == [[2, 1], [4, 5], [3]]
    described = describe_levels(planned, edges, stagger=2.0)
    assert described[1]["nodes"][1] == {
        "node_id": 5,
        "hostname": "n5",
        "method": "scripted",
        "depends_on": [1, 9],
        "starts_after": 2.0,
    }


def test_a_cycle_is_refused_naming_it() -> None:
    with pytest.raises(InputError) as caught:
        levels([_node(1), _node(2), _node(3)], {1: {3}, 3: {2}, 2: {1}})
    assert caught.value.field == "depends_on"
    assert "n1 (1) → n3 (3) → n2 (2) → n1 (1)" in caught.value.message


async def test_stagger_spreads_first_attempts_and_a_device_keeps_its_gap() -> None:
    driver = Outlets()
    nodes = [_node(i) for i in (1, 2, 4, 5)]  # 1 and 2 share pdu-a
    schedule = WakeSchedule(retries=1, delay=0, stagger=0.05, device_gap=0.2)
    outcomes = {o.node_id: o for o in await power_on(nodes, schedule, lambda _n: driver)}
    sent = {i: outcomes[i].first_sent_after or 0.0 for i in outcomes}
    # In order: 1 at 0, 2 on the same PDU not before 0.2, 4 at 0.1 (2 × stagger), 5 at 0.15.
    assert sent[1] < sent[4] < sent[5] < sent[2]
    assert sent[2] >= 0.2 and sent[4] >= 0.1 and sent[5] >= 0.15  # not before their turn


async def test_a_level_starts_when_the_one_before_is_up_and_a_dead_dependency_blocks_its_dependents() -> None:
    driver = Outlets(dead=[4])
    nodes = {i: _node(i) for i in (1, 4, 5, 6)}
    edges = {5: {1}, 6: {4}}  # 5 needs 1 (comes up), 6 needs 4 (never does)
    planned = levels(list(nodes.values()), edges)
    schedule = WakeSchedule(retries=1, delay=0, wait=False, timeout=0.5, probe_interval=0.02)
    outcomes = {
        o.node_id: o for o in await power_on_levels(planned, schedule, lambda: lambda _n: driver, None, edges)
    }
    assert driver.on[5] >= driver.on[1]  # not before its dependency was on
    assert outcomes[1].state == OutcomeState.UP  # a level before the last is verified even without wait
    assert outcomes[4].state == OutcomeState.NOT_UP
    assert outcomes[6].state == OutcomeState.FAILED and 6 not in driver.on
    assert "depends on node 4 (n4), which did not come up" in (outcomes[6].error or "")
    assert outcomes[5].state == OutcomeState.SENT  # the last level keeps the request's "no wait"
