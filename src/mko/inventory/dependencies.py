"""Which nodes a node depends on (``depends_on``): read for many nodes in one query, changed with every
check in one place (the nodes exist, no node depends on itself, no cycle anywhere)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.platform.db.models.inventory import Node, NodeDependency
from mko.platform.errors import InputError

__all__ = [
    "IMPLICIT_EDGE_FIELDS",
    "dependencies_of",
    "depths",
    "find_cycle",
    "implicit_edges",
    "refuse_cycle",
    "set_dependencies",
]

#: The settings a VM's implicit edge to its Proxmox host node is made of (:func:`implicit_edges`).
IMPLICIT_EDGE_FIELDS = ("wol_method", "proxmox_host_id", "proxmox_host_node", "proxmox_node")

#: (node id, power method, Proxmox endpoint id, power_params) of a node: what implicit edges are made of.
ProxmoxRow = tuple[int, str, int | None, Mapping[str, Any] | None]


#: Node ids named in the query's IN list at most; for more (a cluster wake of 10,000 nodes) every
#: dependency is read and filtered here: compiling 10,000 bound parameters took longer than the read.
_IDS_IN_QUERY = 100


def dependencies_of(session: Session, node_ids: Iterable[int] | None = None) -> dict[int, set[int]]:
    """node id → the ids it depends on (depends_on, and a VM's Proxmox host node), for these nodes (all
    when None), in two queries."""
    wanted = None if node_ids is None else set(node_ids)
    query = select(NodeDependency.node_id, NodeDependency.depends_on_id)
    if wanted is not None and len(wanted) <= _IDS_IN_QUERY:
        query = query.where(NodeDependency.node_id.in_(sorted(wanted)))
    edges: dict[int, set[int]] = {}
    for node_id, needed in session.execute(query):
        if wanted is None or node_id in wanted:
            edges.setdefault(node_id, set()).add(needed)
    for node_id, hosts in _implicit(session).items():
        if wanted is None or node_id in wanted:
            edges.setdefault(node_id, set()).update(hosts)
    return edges


def _implicit(session: Session) -> dict[int, set[int]]:
    """Every VM's edges to its Proxmox host nodes, as stored (one query)."""
    rows = session.execute(
        select(Node.id, Node.wol_method, Node.proxmox_host_id, Node.power_params).where(
            Node.proxmox_host_id.is_not(None)
        )
    )
    return implicit_edges(tuple(row) for row in rows)


def implicit_edges(rows: Iterable[ProxmoxRow]) -> dict[int, set[int]]:
    """A VM depends on the node that is its Proxmox host (method ``proxmox_host`` on the same API
    endpoint, and the same PVE node when both name one; every host of the endpoint when the VM's node is
    not named)."""
    hosts: dict[int, list[tuple[int, object]]] = {}
    vms: list[tuple[int, int, object]] = []
    for node_id, method, endpoint, params in rows:
        if endpoint is None:
            continue
        if method == "proxmox_host":
            hosts.setdefault(endpoint, []).append((node_id, (params or {}).get("proxmox_host_node")))
        elif method == "proxmox":
            vms.append((node_id, endpoint, (params or {}).get("proxmox_node")))
    edges: dict[int, set[int]] = {}
    for node_id, endpoint, pve_node in vms:
        candidates = hosts.get(endpoint, [])
        named = [host for host, name in candidates if pve_node and name == pve_node]
        chosen = named or [host for host, _ in candidates]
        if chosen:
            edges[node_id] = set(chosen)
    return edges


def set_dependencies(session: Session, node: Node, depends_on: Sequence[int]) -> None:
    """Replace what ``node`` depends on (not committed: the caller's change commits it)."""
    wanted = sorted(set(depends_on))
    if node.id in wanted:
        raise InputError("depends_on", f"node {node.id} cannot depend on itself")
    if wanted:
        found = set(session.scalars(select(Node.id).where(Node.id.in_(wanted))))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise InputError("depends_on", f"no node {', '.join(map(str, missing))}")
    edges = dependencies_of(session)
    # What it is told to depend on replaces what it was; a VM's edge to its host stays.
    edges[node.id] = set(wanted) | _implicit(session).get(node.id, set())
    refuse_cycle(session, edges, "depends_on")
    kept = {d.depends_on_id: d for d in node.dependencies}
    node.dependencies = [kept.get(needed) or NodeDependency(depends_on_id=needed) for needed in wanted]


def refuse_cycle(session: Session, edges: Mapping[int, set[int]] | None, field: str) -> None:
    """InputError naming ``field`` when ``edges`` (every node's, as the session sees them when None:
    a change to a node's method or Proxmox settings moves the edges a VM has to its host) hold a cycle."""
    cycle = find_cycle(dependencies_of(session) if edges is None else edges)
    if cycle is not None:
        rows = session.execute(select(Node.id, Node.hostname).where(Node.id.in_(cycle)))
        names = {node_id: hostname for node_id, hostname in rows}
        shown = " → ".join(f"{names.get(i, '?')} ({i})" for i in cycle)
        raise InputError(field, f"this would make a dependency cycle: {shown}")


def find_cycle(edges: Mapping[int, set[int]]) -> list[int] | None:
    """One dependency cycle as node ids ``[a, b, …, a]``, or None."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    path: list[int] = []

    def visit(node: int) -> list[int] | None:
        state[node] = 1
        path.append(node)
        for needed in sorted(edges.get(node, ())):
            if state.get(needed) == 1:
                return [*path[path.index(needed) :], needed]
            if needed not in state and (found := visit(needed)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def depths(members: Iterable[int], edges: Mapping[int, set[int]]) -> dict[int, int]:
    """Each member's dependency level among the members: 0 depends on none of them, k on levels < k
    (edges are acyclic: :func:`set_dependencies` refuses cycles)."""
    inside = set(members)
    level: dict[int, int] = {}

    def of(node: int, seen: frozenset[int] = frozenset()) -> int:
        if node not in level:
            needed = [d for d in edges.get(node, ()) if d in inside and d not in seen and d != node]
            level[node] = 1 + max((of(d, seen | {node}) for d in needed), default=-1)
        return level[node]

    for node in inside:
        of(node)
    return level
