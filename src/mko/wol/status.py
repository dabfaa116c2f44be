"""A node's Wake-on-LAN status: its settings, its NIC's Wake-on state and its last wake."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from mko.agents.routing import routed_to_agent
from mko.inventory.nodes import get_node
from mko.inventory.snapshots import params_of, snapshot
from mko.nic.status import nic_status
from mko.operations import ownership
from mko.operations.kinds import WAKE_KIND_PREFIX
from mko.operations.records import last_step_for_node
from mko.platform.db.models.operations import OperationStatus
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
    """``wol status`` without probing (for pages that probe in the background)."""
    node = get_node(session, node_id, with_cluster=True)  # the cluster's site: where packets start
    built = snapshot(node)
    cls = DRIVERS.get(node.wol_method)
    magic = cls is not None and Capability.WAKE_ONLY in cls.capabilities
    params = params_of(node) if cls is not None else None
    configured = params is not None and next(params.missing(enabled=True), None) is None
    secureon = None if params is None else getattr(params, "wol_secureon", None)
    last = last_step_for_node(session, node_id, WAKE_KIND_PREFIX)
    status: dict[str, Any] = {
        "node_id": node.id,
        "hostname": node.hostname,
        "configured": configured,
        "enabled": node.wol_enabled,
        "wakeable": _not_wakeable_reason(node) is None,
        "method": node.wol_method,
        "mac_address": node.wol_mac_address,
        "broadcast_address": effective_broadcast(built) if magic else None,
        "broadcast_configured": node.wol_broadcast_address,
        "port": node.wol_port,
        "interface": getattr(params, "wol_interface", None),
        # Where its packets start: None for this orchestrator, else the site whose agents send them.
        "site": built.site if routed_to_agent(built) else None,
        "secureon_set": secureon is not None,
        "is_virtual_node": node.is_virtual_node,
        "proxmox_vm_id": node.proxmox_vm_id,
        "proxmox_host_id": node.proxmox_host_id,
        "driver_available": cls is not None,
        # What the node's network card itself reported when it was last read over SSH.
        "nic": nic_status(node),
        "last_wake": None,
        "reachable": None,
    }
    if last is not None:
        status["last_wake"] = {
            "operation_id": last.operation_id,
            "at": last.finished_at or last.started_at,
            "status": last.status.value,
            "message": last.message,
            "state": last.detail.get("state"),
        }
        # A read writes nothing: a last wake whose process died shows as interrupted here, and the
        # server's reaper (or the next command) closes it in the database.
        gone = ownership.owner_gone(last.operation) if last.status in ownership.OPEN else None
        if gone is not None:
            status["last_wake"] |= {"status": OperationStatus.FAILED.value, "message": f"interrupted: {gone}"}
    return status
