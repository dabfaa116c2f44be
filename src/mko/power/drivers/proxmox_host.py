"""Proxmox VE hosts: the hypervisor itself as a node, powered on by its own method, shut down by its API.

A host goes **down** through the API (``POST /nodes/{node}/status command=shutdown``, what the web UI's
Shutdown button does; PVE stops any guest still running, then powers off), after every VM mko knows on
it: a VM implicitly depends on its host (``mko.inventory.dependencies``), so cluster shutdowns take the
VMs first. It comes **up** by the method its hardware has, one of ``ethernet``, ``ethernet-raw``,
``ipmi``, ``redfish`` or ``snmp_pdu``, whose settings the node keeps under their usual names
(``wol_mac_address``, ``bmc_address``, ``snmp_outlet``…), and counts as on only once its API answers
(``GET /nodes/{node}/status``): a BMC that says "on" while PVE still boots is not a host its VMs can
start on. So a wake starts the host's VMs only after the host's API is back.

Hard ``off`` is the power method's own (IPMI chassis off, PDU outlet off) where it has one. The state:
on when the API answers; otherwise what the power method reads (off, or unknown while it says on).

The power method is another driver, which this module never imports: the inventory hands each host node
its ``delegate`` (the node as that driver sees it, with its settings model) and the run hands the driver
its ``peers`` (the run's drivers, among them the method's). The API client is :mod:`mko.power.proxmox_api`.

Example: a host woken by Wake-on-LAN::

    mko node add pve1 10.0.0.5 --method proxmox_host --proxmox-host-id 1 --proxmox-host-node pve1 \\
      --proxmox-host-power-method ethernet --mac 58:47:ca:00:00:01

The method's own settings are needed as a node of that method needs them (the registry's joined model
asks the chosen method's model: ``DriverParams.delegate``), so a host is refused when it is configured
without them, not when it is powered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mko.platform.errors import FatalPowerError, PowerError, RetryablePowerError
from mko.power.base import (
    AttemptError,
    Capability,
    NodeSnapshot,
    PowerDriver,
    PowerState,
    ProxmoxEndpoint,
)
from mko.power.fields import choice, validate_name
from mko.power.params import DriverParams, EncryptedSecret, column, param
from mko.power.proxmox_api import call, close, connect

if TYPE_CHECKING:
    from mko.platform.settings import Settings

__all__ = ["POWER_METHODS", "ProxmoxHostDriver", "ProxmoxHostParams"]

log = logging.getLogger("mko.power.proxmox_host")

#: What can switch a hypervisor on: its NIC, its BMC, or the PDU outlet it hangs on.
POWER_METHODS = ("ethernet", "ethernet-raw", "ipmi", "redfish", "snmp_pdu")


class ProxmoxHostParams(DriverParams):
    """The host's API endpoint, its PVE node name and the method that powers it on (whose own settings
    the registry joins to these: ``DRIVERS.params("proxmox_host")``)."""

    # Declared as the VMs' own (one meaning per name): here, the API endpoint of this very host.
    proxmox_host_id: int | None = column(
        help="Proxmox API endpoint (mko proxmox list; the VM's, or a proxmox_host node's own)",
        option="--proxmox-host-id",
        ref="proxmox_host",
    )
    proxmox_host_node: str | None = param(
        help="Proxmox host: its node name in PVE (e.g. pve1)", check=validate_name
    )
    proxmox_host_power_method: str | None = param(
        help="Proxmox host: how it is powered on: " + ", ".join(POWER_METHODS), check=choice(POWER_METHODS)
    )

    required: ClassVar[tuple[str, ...]] = ("proxmox_host_node", "proxmox_host_power_method")
    # The seed's column, set with `wol configure ID --proxmox-host-id N` like a VM's.
    required_when_enabled: ClassVar[tuple[str, ...]] = ("proxmox_host_id",)


class ProxmoxHostDriver(PowerDriver):
    """Powers a Proxmox VE host on by its own method and shuts it down through its API."""

    name: ClassVar[str] = "proxmox_host"
    label: ClassVar[str] = "Proxmox VE host"
    Params: ClassVar[type[DriverParams]] = ProxmoxHostParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.SOFT_OFF, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "physical"
    # Each round asks again whatever the power method is (a magic packet is never acknowledged); the
    # methods themselves skip a switch that is already on.
    confirms_delivery: ClassVar[bool] = False
    verify_by_query: ClassVar[bool] = True
    delegate_setting: ClassVar[str | None] = "proxmox_host_power_method"
    delegates: ClassVar[tuple[str, ...]] = POWER_METHODS

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._apis: dict[int, Any] = {}
        self._delegates: dict[int, PowerDriver] = {}

    @classmethod
    def create(cls, settings: Settings) -> ProxmoxHostDriver:
        """A driver with the settings the power methods need and the API timeout."""
        # NOTE: imported now, before the run's clock starts: imported in the worker thread of the first
        # API call, it would hold the GIL for half a second while the level's staggered power-ons wait.
        import proxmoxer  # noqa: F401

        return cls(settings.power_api_timeout)

    # ------------------------------------------------------------------ the power method

    def _method(self, node: NodeSnapshot) -> tuple[PowerDriver, NodeSnapshot]:
        """The driver of the host's power method (the run's) and the host as that driver sees it."""
        if node.delegate is None:
            raise FatalPowerError(f"{node.label} has no power method: set --proxmox-host-power-method")
        if self.peers is None:
            raise FatalPowerError(f"{node.label}: the {node.delegate.method} driver was not handed over")
        found = self.peers(node.delegate)
        if isinstance(found, AttemptError):
            raise FatalPowerError(found.message)
        self._delegates[id(found)] = found
        return found, node.delegate

    def device_key(self, node: NodeSnapshot) -> str | None:
        """The PDU of an outlet-powered host, so a wake keeps its outlets apart."""
        try:
            inner, as_inner = self._method(node)
        except PowerError:
            return None
        return inner.device_key(as_inner)

    async def _by_method(self, node: NodeSnapshot, action: str) -> None:
        inner, as_inner = self._method(node)
        if not inner.supports(action):
            raise FatalPowerError(
                str(inner.unsupported(as_inner, action)).replace(as_inner.method, node.method)
            )
        if action == "on":
            result = await inner.send_on([as_inner])
        else:
            result = await inner.send_off([as_inner], soft=False)
        error: AttemptError | None = result[node.node_id]
        if error is not None:
            raise (RetryablePowerError if error.retryable else FatalPowerError)(error.message)

    # ------------------------------------------------------------------ the API

    def _endpoint(self, node: NodeSnapshot) -> ProxmoxEndpoint:
        endpoint = node.refs.get("proxmox_host")
        if not isinstance(endpoint, ProxmoxEndpoint):
            raise FatalPowerError(
                f"{node.label} is a Proxmox host but names no Proxmox API endpoint: add it (`mko proxmox"
                f" add`) and set it with `mko node update {node.node_id} --proxmox-host-id <id>`"
            )
        if not endpoint.secret_encrypted:
            raise FatalPowerError(f"Proxmox host {endpoint.name} has no secret stored")
        return endpoint

    def _pve_node(self, node: NodeSnapshot) -> str:
        pve_node: str | None = self.params(node).proxmox_host_node
        if not pve_node:
            raise FatalPowerError(f"{node.label} has no PVE node name: set --proxmox-host-node")
        return pve_node

    async def _api(self, node: NodeSnapshot) -> tuple[ProxmoxEndpoint, Any]:
        endpoint = self._endpoint(node)
        if endpoint.host_id not in self._apis:
            secret = self.reveal(EncryptedSecret(endpoint.secret_encrypted or ""))
            self._apis[endpoint.host_id] = await call(
                endpoint, lambda: connect(endpoint, secret, self._timeout, pool_size=2)
            )
        return endpoint, self._apis[endpoint.host_id]

    def _forget(self, endpoint: ProxmoxEndpoint) -> None:
        """Drop a session whose host went away: its pooled connections died with it."""
        api = self._apis.pop(endpoint.host_id, None)
        if api is not None:
            close(api)

    async def _api_answers(self, node: NodeSnapshot) -> bool:
        """Whether the host's API serves its node status now (FatalPowerError: it refuses mko)."""
        endpoint, api = await self._api(node)
        pve_node = self._pve_node(node)
        try:
            await call(endpoint, api.nodes(pve_node).status.get)
        except RetryablePowerError as exc:
            log.info("%s: API not answering: %s", node.label, exc)
            self._forget(endpoint)
            return False
        return True

    # ------------------------------------------------------------------ primitives

    async def _on(self, node: NodeSnapshot) -> None:
        if await self._api_answers(node):
            return
        await self._by_method(node, "on")
        log.info(
            "%s: powered on by %s; waiting for its API",
            node.label,
            self.params(node).proxmox_host_power_method,
        )

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        if not soft:
            await self._by_method(node, "off")
            return
        if not await self._api_answers(node):
            return  # nothing answers: already down (the query says whether it is off)
        endpoint, api = await self._api(node)
        pve_node = self._pve_node(node)
        running = await call(endpoint, lambda: _running_guests(api, pve_node))
        if running:
            log.info("%s: PVE stops its running guests first: %s", node.label, ", ".join(running))
        await call(endpoint, lambda: api.nodes(pve_node).status.post(command="shutdown"))
        self._forget(endpoint)
        log.info("%s: asked Proxmox host %s to shut down", node.label, pve_node)

    async def query(self, node: NodeSnapshot) -> PowerState:
        """On when its API answers; otherwise the power method's reading (on means still booting or
        stopping: unknown)."""
        if await self._api_answers(node):
            return PowerState.ON
        inner, as_inner = self._method(node)
        if not inner.supports("status"):
            return PowerState.UNKNOWN
        try:
            state = await inner.query(as_inner)
        except RetryablePowerError:
            return PowerState.UNKNOWN
        return PowerState.OFF if state == PowerState.OFF else PowerState.UNKNOWN

    async def aclose(self) -> None:
        """Close the API sessions and the power methods' drivers (closing one twice is harmless, so the
        run may close a driver it shares with other nodes again)."""
        for endpoint_id in list(self._apis):
            close(self._apis.pop(endpoint_id))
        delegates, self._delegates = self._delegates, {}
        for delegate in delegates.values():
            await delegate.aclose()


def _running_guests(api: Any, pve_node: str) -> list[str]:
    """The VMs and containers running on the node, as ``qemu/101``."""
    running = []
    for kind in ("qemu", "lxc"):
        for guest in getattr(api.nodes(pve_node), kind).get():
            if guest.get("status") == "running":
                running.append(f"{kind}/{guest.get('vmid')}")
    return running
