"""A node's Wake-on-LAN status: its settings, its NIC's Wake-on state and its last wake."""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Integer, Select, bindparam
from sqlalchemy.orm import Session

from mko.agents.routing import routed_to_agent
from mko.inventory.nodes import get_node
from mko.inventory.snapshots import bare_snapshot, node_from_row, node_rows_query, snapshot
from mko.nic.status import nic_status
from mko.operations import ownership
from mko.operations.kinds import WAKE_KIND_PREFIX
from mko.operations.records import last_step_id
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.errors import NotFoundError
from mko.power.base import Capability, NodeSnapshot
from mko.power.drivers.wol import effective_broadcast
from mko.power.probe import probe_tcp
from mko.power.registry import DRIVERS
from mko.wol.wake import _not_wakeable_reason

__all__ = ["probe_reachable", "wol_status", "wol_status_sync"]


async def wol_status(session: Session, node_id: int, *, probe: bool, probe_timeout: float) -> dict[str, Any]:
    """The seed's ``wol status``: configuration, last wake and, when asked, reachability now."""
    ownership.close_orphaned(session)  # a last wake whose process died is closed as interrupted
    status = wol_status_sync(session, node_id)
    if probe:
        target = snapshot(get_node(session, node_id))
        status["reachable"] = await probe_reachable(target, probe_timeout)
    return status


async def probe_reachable(target: NodeSnapshot, timeout: float) -> dict[str, Any]:
    """``wol status --probe``'s reachability: a TCP probe of the node's probe port now."""
    result = await probe_tcp(target.ip_address, target.probe_port, timeout)
    return {"port": target.probe_port, "ok": result.ok, "error": result.error}


def wol_status_sync(session: Session, node_id: int) -> dict[str, Any]:
    """``wol status`` without probing (for pages that probe in the background).

    One query reads the node, its cluster's site and its last wake with its operation's owner: the
    columns the answer shows, no ORM objects (loading the node with its relationships cost more than
    the rest of the request). It writes nothing: a last wake whose process died shows as interrupted
    here, and the server's reaper (or the next command) closes it in the database.
    """
    query, keys = _status_query()
    # On the session's connection: the same transaction, without the ORM's result machinery (half the
    # cost of the read).
    row = session.connection().execute(query, {"node_id": node_id}).first()
    if row is None:
        raise NotFoundError("node", node_id)
    node = node_from_row(row, keys)
    known = node.wol_method in DRIVERS
    built = bare_snapshot(node) if known else None
    params = built.params if built is not None else None
    configured = params is not None and next(params.missing(enabled=True), None) is None
    secureon = None if params is None else getattr(params, "wol_secureon", None)
    magic = node.wol_method in DRIVERS.with_capability(Capability.WAKE_ONLY)
    status: dict[str, Any] = {
        "node_id": node.id,
        "hostname": node.hostname,
        "configured": configured,
        "enabled": node.wol_enabled,
        "wakeable": _not_wakeable_reason(node, built) is None,
        "method": node.wol_method,
        "mac_address": node.wol_mac_address,
        "broadcast_address": effective_broadcast(built) if magic and built is not None else None,
        "broadcast_configured": node.wol_broadcast_address,
        "port": node.wol_port,
        "interface": getattr(params, "wol_interface", None),
        # Where its packets start: None for this orchestrator, else the site whose agents send them.
        "site": built.site if built is not None and routed_to_agent(built) else None,
        "secureon_set": secureon is not None,
        "is_virtual_node": node.is_virtual_node,
        "proxmox_vm_id": node.proxmox_vm_id,
        "proxmox_host_id": node.proxmox_host_id,
        "driver_available": known,
        # What the node's network card itself reported when it was last read over SSH.
        "nic": nic_status(node),
        "last_wake": None if row.step_id is None else _last_wake(row),
        "reachable": None,
    }
    return status


def _last_wake(row: Any) -> dict[str, Any]:
    last_wake = {
        "operation_id": row.step_operation_id,
        "at": row.step_finished_at or row.step_started_at,
        "status": row.step_status.value,
        "message": row.step_message,
        "state": row.step_detail.get("state"),
    }
    if row.step_status in ownership.OPEN:
        owner: Any = SimpleNamespace(**{name: getattr(row, f"operation_{name}") for name in _OWNER_COLUMNS})
        gone = ownership.owner_gone(owner)
        if gone is not None:
            last_wake |= {"status": OperationStatus.FAILED.value, "message": f"interrupted: {gone}"}
    return last_wake


#: What the status shows of a node beside what a snapshot reads.
_STATUS_COLUMNS = (
    Node.wol_mac_address,
    Node.wol_broadcast_address,
    Node.wol_port,
    Node.is_virtual_node,
    Node.proxmox_vm_id,
    Node.nic_interface,
    Node.nic_wol_supported,
    Node.nic_wol_state,
    Node.nic_wol_persistence,
    Node.nic_checked_at,
    Node.nic_collected_at,
)
_STEP_COLUMNS = ("id", "operation_id", "status", "message", "detail", "started_at", "finished_at")
#: What :func:`mko.operations.ownership.owner_gone` reads of an operation.
_OWNER_COLUMNS = ("owner_host", "owner_pid", "owner_start", "heartbeat_at", "started_at", "created_at")


@cache  # built once: building the statement cost more than running it (its SQL is cached on it)
def _status_query() -> tuple[Select[Any], list[str]]:
    """The status's one query, and the names of its node columns (those before ``cluster_site``)."""
    node_id = bindparam("node_id", type_=Integer)
    query = (
        node_rows_query(*_STATUS_COLUMNS)
        .add_columns(*(getattr(OperationStep, name).label(f"step_{name}") for name in _STEP_COLUMNS))
        .add_columns(*(getattr(Operation, name).label(f"operation_{name}") for name in _OWNER_COLUMNS))
        .outerjoin(OperationStep, OperationStep.id == last_step_id(node_id, WAKE_KIND_PREFIX))
        .outerjoin(Operation, Operation.id == OperationStep.operation_id)
        .where(Node.id == node_id)
    )
    names = list(query.selected_columns.keys())
    return query, names[: names.index("cluster_site")]
