"""Which nodes a site's agent wakes, and what it is told about each (no secrets, only
references)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mko.platform.db.models.inventory import NodeRole, WolMethod
from mko.power.base import NodeSnapshot

__all__ = ["AGENT_METHODS", "routed_to_agent", "snapshot_from_payload", "split_by_site"]


AGENT_METHODS = frozenset({WolMethod.ETHERNET, WolMethod.ETHERNET_RAW})


def routed_to_agent(node: NodeSnapshot) -> bool:
    """Whether the node's magic packets are sent by its site's agent rather than by us."""
    return node.site is not None and node.method in AGENT_METHODS


def split_by_site(nodes: Sequence[NodeSnapshot]) -> tuple[list[NodeSnapshot], dict[str, list[NodeSnapshot]]]:
    """Local nodes, and the others grouped by site."""
    local: list[NodeSnapshot] = []
    remote: dict[str, list[NodeSnapshot]] = {}
    for node in nodes:
        if routed_to_agent(node):
            assert node.site is not None
            remote.setdefault(node.site, []).append(node)
        else:
            local.append(node)
    return local, remote


def node_payload(node: NodeSnapshot) -> dict[str, Any]:
    """What an agent needs to wake and probe one node (the SecureOn password only as a flag)."""
    return {
        "node_id": node.node_id,
        "hostname": node.hostname,
        "ip_address": node.ip_address,
        "role": node.role.value,
        "method": node.method.value,
        "probe_port": node.probe_port,
        "mac": node.mac,
        "wol_port": node.wol_port,
        "broadcast": node.broadcast,
        "prefix_len": node.prefix_len,
        "interface": node.interface,
        "secureon": node.has_secureon,
    }


def snapshot_from_payload(data: dict[str, Any], site: str | None = None) -> NodeSnapshot:
    """The NodeSnapshot an agent wakes, from a claimed job's node entry."""
    secureon = data.get("secureon")
    return NodeSnapshot(
        node_id=int(data["node_id"]),
        hostname=str(data["hostname"]),
        ip_address=str(data["ip_address"]),
        role=NodeRole(data["role"]),
        method=WolMethod(data["method"]),
        probe_port=int(data["probe_port"]),
        mac=data.get("mac"),
        wol_port=int(data.get("wol_port") or 9),
        broadcast=data.get("broadcast"),
        prefix_len=data.get("prefix_len"),
        interface=data.get("interface"),
        secureon=secureon if isinstance(secureon, str) else None,
        site=site,
    )
