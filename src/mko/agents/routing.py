"""Which nodes a site's agent wakes, and what it is told about each (no secrets, only
references)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mko.platform.db.models.inventory import NodeRole
from mko.power.base import Capability, NodeSnapshot
from mko.power.drivers.wol import WolParams
from mko.power.params import RevealedSecret
from mko.power.registry import DRIVERS

__all__ = ["agent_methods", "routed_to_agent", "snapshot_from_payload", "split_by_site"]


def agent_methods() -> frozenset[str]:
    """The methods a wake agent can relay: unacknowledged wake signals sent on the node's LAN."""
    return DRIVERS.with_capability(Capability.WAKE_ONLY)


def routed_to_agent(node: NodeSnapshot) -> bool:
    """Whether the node's magic packets are sent by its site's agent rather than by us."""
    return node.site is not None and node.method in agent_methods()


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
    params = node.params
    assert isinstance(params, WolParams)
    return {
        "node_id": node.node_id,
        "hostname": node.hostname,
        "ip_address": node.ip_address,
        "role": str(node.role),
        "method": node.method,
        "probe_port": node.probe_port,
        "mac": params.wol_mac_address,
        "wol_port": params.wol_port,
        "broadcast": params.wol_broadcast_address,
        "prefix_len": params.wol_prefix_len,
        "interface": params.wol_interface,
        "secureon": params.wol_secureon is not None,
    }


def snapshot_from_payload(data: dict[str, Any], site: str | None = None) -> NodeSnapshot:
    """The NodeSnapshot an agent wakes, from a claimed job's node entry."""
    secureon = data.get("secureon")
    method = str(data["method"])
    params = DRIVERS.params(method).model_validate(
        {
            "wol_mac_address": data.get("mac"),
            "wol_port": int(data.get("wol_port") or 9),
            "wol_broadcast_address": data.get("broadcast"),
            "wol_prefix_len": data.get("prefix_len"),
            "wol_interface": data.get("interface"),
            "wol_secureon": RevealedSecret(secureon) if isinstance(secureon, str) else None,
        }
    )
    return NodeSnapshot(
        node_id=int(data["node_id"]),
        hostname=str(data["hostname"]),
        ip_address=str(data["ip_address"]),
        role=NodeRole(data["role"]),
        method=method,
        probe_port=int(data["probe_port"]),
        site=site,
        params=params,
    )
