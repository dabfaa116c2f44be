"""The order of a wake: nodes in dependency levels (``depends_on``), each level's power-ons spread by
the stagger and the per-device gap. Pure code: the wake service gives the snapshots and the edges.

Level 0 holds the nodes that depend on nothing in the wake; level k the nodes whose dependencies are
all in levels below k. Within a level the control planes come first. Dependencies on nodes outside the
wake are left out (they are not being woken). A cycle is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mko.inventory.dependencies import find_cycle
from mko.platform.db.models.inventory import NodeRole
from mko.platform.errors import InputError
from mko.power.base import NodeSnapshot

__all__ = ["describe_levels", "levels"]


def levels(nodes: Sequence[NodeSnapshot], edges: Mapping[int, set[int]]) -> list[list[NodeSnapshot]]:
    """The nodes in dependency levels; InputError naming the cycle when there is one."""
    members = {n.node_id for n in nodes}
    # Only the nodes that depend on another member: at 10,000 nodes with no edges, no set per node.
    inside = {
        n: needed
        for n, deps in edges.items()
        if n in members and (needed := {d for d in deps if d in members and d != n})
    }
    cycle = find_cycle(inside)
    if cycle is not None:
        names = {n.node_id: n.hostname for n in nodes}
        raise InputError("depends_on", "dependency cycle: " + " → ".join(f"{names[i]} ({i})" for i in cycle))
    level_of: dict[int, int] = {}

    def level(node: int) -> int:
        if node not in level_of:
            level_of[node] = 1 + max((level(d) for d in inside.get(node, ())), default=-1)
        return level_of[node]

    ordered: list[list[NodeSnapshot]] = []
    for node in nodes:
        depth = level(node.node_id)
        while len(ordered) <= depth:
            ordered.append([])
        ordered[depth].append(node)
    return [sorted(group, key=lambda n: (n.role != NodeRole.CONTROL_PLANE, n.node_id)) for group in ordered]


def describe_levels(
    planned: Sequence[Sequence[NodeSnapshot]], edges: Mapping[int, set[int]], stagger: float
) -> list[dict[str, Any]]:
    """The plan as data for ``--dry-run`` (CLI) and the API: each level's nodes, their methods and what
    they wait for, and when each first attempt goes out within its level."""
    return [
        {
            "level": index,
            "nodes": [
                {
                    "node_id": node.node_id,
                    "hostname": node.hostname,
                    "method": node.method,
                    "depends_on": sorted(edges.get(node.node_id, ())),
                    "starts_after": round(position * stagger, 3),
                }
                for position, node in enumerate(group)
            ],
        }
        for index, group in enumerate(planned)
    ]
