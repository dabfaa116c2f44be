"""``wol collect-mac``: read each node's MAC address and interfaces over SSH (or from
Ansible facts) and store them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.inventory.nodes import get_node, list_nodes
from mko.nic.interfaces import Choice, Interface, choose_interface, read_interfaces
from mko.operations.records import Actor, finish_operation, get_operation, record_step, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import in_thread_session
from mko.platform.errors import ConflictError, InputError, MkoError
from mko.platform.settings import Settings
from mko.ssh.client import SshTarget, connect

__all__ = ["NodeNetwork", "apply_network_facts", "collect_macs"]


@dataclass
class NodeNetwork:
    """What one node reported, or why it could not."""

    node_id: int
    hostname: str
    interfaces: list[Interface] = field(default_factory=list)
    choice: Choice | None = None
    error: str | None = None
    duration: float = 0.0


async def _read_node(target: SshTarget, settings: Settings, node_ip: str) -> NodeNetwork:
    started = asyncio.get_running_loop().time()
    facts = NodeNetwork(target.node_id or 0, target.name)
    try:
        async with connect(target, settings) as session:
            facts.interfaces = await read_interfaces(session)
        facts.choice = choose_interface(facts.interfaces, node_ip)
    except MkoError as exc:
        facts.error = str(exc)
    facts.duration = asyncio.get_running_loop().time() - started
    return facts


def _nodes_for(session: Session, node_ids: Sequence[int] | None) -> list[Node]:
    if node_ids is None:
        return list_nodes(session)
    if not node_ids:
        raise InputError("node_ids", "give at least one node id (or none at all for every node)")
    unique = sorted(set(node_ids))
    return [get_node(session, node_id) for node_id in unique]


def apply_network_facts(
    session: Session, node: Node, facts: NodeNetwork, *, overwrite: bool
) -> dict[str, Any]:
    """Store what a node reported (MAC only when empty, same, or ``overwrite``); return its result row."""
    row: dict[str, Any] = {
        "node_id": node.id,
        "hostname": node.hostname,
        "state": "failed",
        "interface": None,
        "mac": None,
        "previous_mac": node.wol_mac_address,
        "address": None,
        "prefix_len": None,
        "reason": None,
        "interfaces": [i.as_dict() for i in facts.interfaces],
        "error": facts.error,
        "duration": round(facts.duration, 3),
    }
    if facts.interfaces:
        node.nic_interfaces = row["interfaces"]
        node.nic_collected_at = utcnow()
    choice = facts.choice
    if choice is None:
        session.commit()
        return row
    row |= {
        "interface": choice.interface.name,
        "mac": choice.mac,
        "address": choice.address,
        "prefix_len": choice.prefix_len,
        "reason": choice.reason,
    }
    other = session.scalars(
        select(Node).where(Node.wol_mac_address == choice.mac, Node.id != node.id)
    ).first()
    if other is not None:
        row["state"] = "conflict"
        row["error"] = f"MAC {choice.mac} already belongs to node {other.id} ({other.hostname})"
        session.commit()
        return row
    if node.wol_mac_address is None:
        row["state"] = "collected"
    elif node.wol_mac_address == choice.mac:
        row["state"] = "unchanged"
    elif overwrite:
        row["state"] = "updated"
    else:
        row["state"] = "differs"
        row["error"] = (
            f"the node reports {choice.mac} on {choice.interface.name}, the inventory has "
            f"{node.wol_mac_address}; not replaced (use --overwrite)"
        )
        session.commit()
        return row
    node.wol_mac_address = choice.mac
    node.nic_interface = choice.interface.name
    if choice.prefix_len is not None:
        # A new dict: the JSON column notices only assignment.
        node.power_params = {**(node.power_params or {}), "wol_prefix_len": choice.prefix_len}
    session.commit()
    return row


_ROW_STATUS = {
    "collected": OperationStatus.SUCCEEDED,
    "unchanged": OperationStatus.SUCCEEDED,
    "updated": OperationStatus.SUCCEEDED,
    "differs": OperationStatus.SUCCEEDED,
    "conflict": OperationStatus.FAILED,
    "failed": OperationStatus.FAILED,
}


def describe_row(row: dict[str, Any]) -> str:
    """Return one line about a node's collection result."""
    if row["state"] in ("failed", "conflict"):
        return str(row["error"])
    text = f"{row['state']}: {row['mac']} on {row['interface']}"
    if row["prefix_len"] is not None:
        text += f", /{row['prefix_len']}"
    if row["state"] == "differs":
        text += f" (inventory has {row['previous_mac']}; not replaced, use --overwrite)"
    elif row["state"] == "updated":
        text += f" (was {row['previous_mac']})"
    return text


async def collect_macs(
    sessions: sessionmaker[Session],
    settings: Settings,
    node_ids: Sequence[int] | None,
    *,
    overwrite: bool = False,
    actor: Actor,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> Operation:
    """Read every node's interfaces over SSH at once and store their MACs; one operation, a step each.

    Database work runs in worker threads with short sessions of its own, never across the SSH waits.
    """

    def begin(session: Session) -> tuple[int, dict[int, tuple[SshTarget, str]]]:
        nodes = _nodes_for(session, node_ids)
        if not nodes:
            raise ConflictError(
                "there are no nodes to collect MAC addresses from: add one with `mko node add HOSTNAME IP`"
            )
        operation = start_operation(
            session,
            kind="wol_collect_mac",
            target_type="nodes",
            target_id=None,
            actor=actor,
            parameters={"node_ids": [n.id for n in nodes], "overwrite": overwrite},
            summary=f"collecting MAC addresses of {len(nodes)} node(s)",
        )
        return operation.id, {n.id: (SshTarget.of(n, settings), n.ip_address) for n in nodes}

    operation_id, targets = await in_thread_session(sessions, begin)
    started = utcnow()
    limit = asyncio.Semaphore(settings.ssh_parallel)

    async def one(node_id: int) -> NodeNetwork:
        target, node_ip = targets[node_id]
        async with limit:
            return await _read_node(target, settings, node_ip)

    def store(session: Session, *, facts: NodeNetwork) -> dict[str, Any]:
        node = get_node(session, facts.node_id)
        row = apply_network_facts(session, node, facts, overwrite=overwrite)
        record_step(
            session,
            session.get_one(Operation, operation_id),
            name=f"collect {node.hostname}",
            status=_ROW_STATUS[row["state"]],
            node_id=node.id,
            message=describe_row(row),
            detail=row,
            started_at=started,
        )
        return row

    rows: list[dict[str, Any]] = []
    try:
        for future in asyncio.as_completed([one(node_id) for node_id in targets]):
            facts = await future
            row = await in_thread_session(sessions, functools.partial(store, facts=facts))
            rows.append(row)
            if on_result is not None:
                on_result(row)
    except asyncio.CancelledError:
        # Here, not in a worker thread: the task is being cancelled and must record that before it ends.
        with sessions() as session:
            operation = session.get_one(Operation, operation_id)
            finish_operation(session, operation, status=OperationStatus.CANCELLED, summary="cancelled")
        raise
    rows.sort(key=lambda r: r["node_id"])
    return await in_thread_session(
        sessions, lambda session: _finish_collect(session, get_operation(session, operation_id), rows)
    )


def _finish_collect(session: Session, operation: Operation, rows: list[dict[str, Any]]) -> Operation:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    good = sum(counts.get(s, 0) for s in ("collected", "unchanged", "updated", "differs"))
    summary = f"{good}/{len(rows)} node(s) read: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    bad = [f"{r['hostname']}: {r['error']}" for r in rows if r["state"] in ("failed", "conflict", "differs")]
    if bad:
        summary += "; " + "; ".join(bad)
    if good == len(rows):
        status = OperationStatus.SUCCEEDED
    elif good:
        status = OperationStatus.PARTIAL
    else:
        status = OperationStatus.FAILED
    return finish_operation(session, operation, status=status, summary=summary, result={"nodes": rows})
