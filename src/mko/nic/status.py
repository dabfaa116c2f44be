"""A node's NIC Wake-on state as last stored (pure: no SSH)."""

from __future__ import annotations

from typing import Any

from mko.platform.db.models.inventory import Node

__all__ = []


def nic_status(node: Node) -> dict[str, Any]:
    """Return the NIC's Wake-on state as last read from the node (all None until it was read)."""
    supported = node.nic_wol_supported
    return {
        "interface": node.nic_interface,
        "supports_wake_on": supported,
        "wake_on": node.nic_wol_state,
        "magic_packet_capable": None if supported is None else "g" in supported,
        "armed": None if node.nic_wol_state is None else "g" in node.nic_wol_state,
        "persistence": node.nic_wol_persistence,
        "checked_at": node.nic_checked_at,
        "interfaces_collected_at": node.nic_collected_at,
    }
