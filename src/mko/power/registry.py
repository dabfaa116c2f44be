"""Power drivers: a registry of small modules sharing one schedule (see ``mko.power.base``).

* ``ethernet``, ``ethernet-raw``: :class:`mko.power.drivers.wol.WolDriver`, magic packets; on only (status is
  a TCP probe of the node);
* ``proxmox``: :class:`mko.power.drivers.proxmox.ProxmoxDriver`, VMs and containers; on, off, soft, status;
* ``ipmi``: :class:`mko.power.drivers.ipmi.IpmiDriver`, chassis power; on, off, soft, status;
* ``redfish``: :class:`mko.power.drivers.redfish.RedfishDriver`, ComputerSystem.Reset; on, off, soft, status.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from mko.platform.db.models.inventory import WolMethod
from mko.platform.errors import MkoError
from mko.power.base import AttemptError, DriverLookup, NodeSnapshot, PowerDriver

if TYPE_CHECKING:
    from mko.platform.settings import Settings

__all__ = ["DRIVERS", "DriverFactory", "driver_class", "driver_lookup", "missing_driver_message"]

DriverFactory = Callable[[], PowerDriver]

_DRIVER_PATHS: dict[WolMethod, str] = {
    WolMethod.ETHERNET: "mko.power.drivers.wol:WolDriver",
    WolMethod.ETHERNET_RAW: "mko.power.drivers.wol:WolDriver",
    WolMethod.PROXMOX: "mko.power.drivers.proxmox:ProxmoxDriver",
    WolMethod.IPMI: "mko.power.drivers.ipmi:IpmiDriver",
    WolMethod.REDFISH: "mko.power.drivers.redfish:RedfishDriver",
}


class _Registry(Mapping[WolMethod, type[PowerDriver]]):
    """Method → driver class, importing a driver module only when it is first needed (proxmoxer and
    pyghmi take a noticeable part of a second to import, and most CLI commands never use them)."""

    def __getitem__(self, method: WolMethod) -> type[PowerDriver]:
        module, _, name = _DRIVER_PATHS[method].partition(":")
        driver: type[PowerDriver] = getattr(importlib.import_module(module), name)
        return driver

    def __iter__(self) -> Iterator[WolMethod]:
        return iter(_DRIVER_PATHS)

    def __len__(self) -> int:
        return len(_DRIVER_PATHS)


#: Which driver class serves which node method. Methods absent here have no driver in this version.
DRIVERS: Mapping[WolMethod, type[PowerDriver]] = _Registry()


def driver_class(method: WolMethod) -> type[PowerDriver] | None:
    """The driver class of a power method, or None."""
    return DRIVERS.get(method)


def missing_driver_message(node: NodeSnapshot) -> AttemptError:
    """The honest error for a node whose power method has no driver."""
    return AttemptError(f"{node.label}: no power driver for method {node.method.value!r}", retryable=False)


def driver_lookup(settings: Settings) -> DriverLookup:
    """Drivers for one run: one instance per driver class, shared by all its nodes."""
    shared: dict[type[PowerDriver], PowerDriver | AttemptError] = {}

    def lookup(node: NodeSnapshot) -> PowerDriver | AttemptError:
        cls = DRIVERS.get(node.method)
        if cls is None:
            return missing_driver_message(node)
        if cls not in shared:
            try:
                shared[cls] = cls.create(settings)
            except MkoError as exc:  # e.g. an unreadable secret key: every node of this driver fails
                shared[cls] = AttemptError(f"{cls.label} driver unavailable: {exc}", retryable=False)
        return shared[cls]

    return lookup
