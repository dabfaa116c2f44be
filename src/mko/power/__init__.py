"""Power drivers: a registry of small modules sharing one schedule (see ``mko.power.base``)."""

from __future__ import annotations

from collections.abc import Callable

from mko.db.models import WolMethod
from mko.power.base import AttemptError, NodeSnapshot, PowerDriver
from mko.power.wol import WolDriver

__all__ = ["DRIVERS", "DriverFactory", "missing_driver_message"]

DriverFactory = Callable[[], PowerDriver]

#: Which driver class serves which node method. Methods absent here have no driver in this version.
DRIVERS: dict[WolMethod, type[PowerDriver]] = {method: WolDriver for method in WolDriver.methods}


def missing_driver_message(node: NodeSnapshot) -> AttemptError:
    """The honest error for a node whose power method has no driver yet."""
    if node.method == WolMethod.PROXMOX:
        text = (
            f"node {node.node_id} ({node.hostname}) is a Proxmox VM: magic packets cannot start it and"
            " this version of mko has no Proxmox driver yet; start the VM from Proxmox"
        )
    else:
        text = f"node {node.node_id} ({node.hostname}): no power driver for method {node.method.value!r}"
    return AttemptError(text, retryable=False)
