"""Proxmox VE: start and stop virtual machines and containers through the PVE API, with proxmoxer.

Waking a virtual node means: find its guest (the node named in mko, else ``cluster/resources``), ask
``status/current``, ``POST …/status/start`` if it is not running, follow the task (UPID) until it ends,
and check ``status/current`` says running. A failed task is reported with Proxmox's own error text.
Shutting down is an ACPI ``shutdown`` with a timeout after which Proxmox stops the guest (``soft``), or
an immediate ``stop`` (``off``). Every call runs in a worker thread (proxmoxer speaks blocking requests):
the client, its TLS pinning and its error mapping are :mod:`mko.power.proxmox_api`'s.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, SecretStr

from mko.platform.errors import FatalPowerError, RetryablePowerError
from mko.power.base import Capability, NodeSnapshot, PowerDriver, PowerState, ProxmoxEndpoint
from mko.power.fields import integer_range, validate_name
from mko.power.params import DriverParams, EncryptedSecret, column, param
from mko.power.proxmox_api import call, close, connect

if TYPE_CHECKING:
    from mko.platform.settings import Settings

__all__ = ["ProxmoxDriver", "ProxmoxParams", "ProxmoxSettings"]

log = logging.getLogger("mko.power.proxmox")

GuestKind = Literal["qemu", "lxc"]
_KIND_NAME = {"qemu": "VM", "lxc": "container"}


class ProxmoxParams(DriverParams):
    """A virtual node: its guest id and the Proxmox host (the seed's fields) and, optionally, its node."""

    proxmox_vm_id: int | None = column(
        help="Proxmox VM (or container) id",
        option="--proxmox-vm-id",
        check=integer_range(100, 999_999_999, "a Proxmox VM id"),
    )
    proxmox_host_id: int | None = column(
        help="Proxmox API endpoint (mko proxmox list; the VM's, or a proxmox_host node's own)",
        option="--proxmox-host-id",
        ref="proxmox_host",
    )
    proxmox_node: str | None = param(help="Proxmox node of the VM; found if omitted", check=validate_name)

    required_when_enabled: ClassVar[tuple[str, ...]] = ("proxmox_vm_id",)


class ProxmoxSettings(BaseModel):
    """What the driver needs for one guest; ``secret`` is the API token secret or the password."""

    host: str
    port: int = 8006
    token_id: str | None = None
    username: str | None = None
    secret: SecretStr
    verify_tls: bool = True
    ca_file: str | None = None
    fingerprint: str | None = None
    vmid: int
    node: str | None = None


@dataclass(frozen=True)
class _Guest:
    node: str
    kind: GuestKind
    vmid: int

    @property
    def name(self) -> str:
        return f"{_KIND_NAME[self.kind]} {self.vmid} on {self.node}"


class ProxmoxDriver(PowerDriver):
    """Starts, shuts down and stops Proxmox VMs and containers, and reads their status."""

    name: ClassVar[str] = "proxmox"
    Params: ClassVar[type[DriverParams]] = ProxmoxParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.SOFT_OFF, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "virtual"
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True
    parallel: ClassVar[int] = 16
    label: ClassVar[str] = "Proxmox VE"
    badge: ClassVar[str] = "Proxmox"

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        task_timeout: float = 120.0,
        shutdown_timeout: int = 120,
        poll_interval: float = 1.0,
    ) -> None:
        self._timeout = timeout
        self._task_timeout = task_timeout
        self._shutdown_timeout = shutdown_timeout
        self._poll = poll_interval
        self._apis: dict[int, Any] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._guests: dict[int, _Guest] = {}
        self._resources: dict[int, list[dict[str, Any]]] = {}

    @classmethod
    def create(cls, settings: Settings) -> ProxmoxDriver:
        """A driver with the settings' timeouts and secret key."""
        return cls(
            timeout=settings.power_api_timeout,
            task_timeout=settings.proxmox_task_timeout,
            shutdown_timeout=settings.proxmox_shutdown_timeout,
        )

    def settings_for(self, node: NodeSnapshot) -> ProxmoxSettings:
        """The node's driver settings, with the secret decrypted; FatalPowerError when incomplete."""
        endpoint = self._endpoint(node)
        params: ProxmoxParams = self.params(node)
        if params.proxmox_vm_id is None:
            raise FatalPowerError(f"{node.label} has no Proxmox VM id; set it with `wol configure`")
        if not endpoint.secret_encrypted:
            raise FatalPowerError(f"Proxmox host {endpoint.name} has no secret stored")
        return ProxmoxSettings(
            host=endpoint.host,
            port=endpoint.port,
            token_id=endpoint.token_id,
            username=endpoint.username,
            secret=SecretStr(self.reveal(EncryptedSecret(endpoint.secret_encrypted))),
            verify_tls=endpoint.verify_tls,
            ca_file=endpoint.ca_file,
            fingerprint=endpoint.fingerprint,
            vmid=params.proxmox_vm_id,
            node=params.proxmox_node,
        )

    @staticmethod
    def _endpoint(node: NodeSnapshot) -> ProxmoxEndpoint:
        endpoint = node.refs.get("proxmox_host")
        if not isinstance(endpoint, ProxmoxEndpoint):
            raise FatalPowerError(
                f"{node.label} is a Proxmox VM but has no Proxmox host: add one (`mko proxmox add`) and"
                f" set it with `wol configure {node.node_id} --proxmox-host-id <id>`"
            )
        return endpoint

    async def _api(self, node: NodeSnapshot) -> tuple[ProxmoxEndpoint, Any]:
        endpoint = self._endpoint(node)
        lock = self._locks.setdefault(endpoint.host_id, asyncio.Lock())
        async with lock:  # one login per host, however many of its guests wake at once
            if endpoint.host_id not in self._apis:
                secret = self.settings_for(node).secret.get_secret_value()
                self._apis[endpoint.host_id] = await call(
                    endpoint, lambda: connect(endpoint, secret, self._timeout, self.parallel)
                )
        return endpoint, self._apis[endpoint.host_id]

    async def _guest(self, node: NodeSnapshot) -> tuple[ProxmoxEndpoint, Any, _Guest]:
        endpoint, api = await self._api(node)
        if node.node_id in self._guests:
            return endpoint, api, self._guests[node.node_id]
        settings = self.settings_for(node)
        vmid = settings.vmid
        if settings.node:
            pve_node = settings.node
            kind = await call(endpoint, lambda: _kind_on_node(api, pve_node, vmid))
            if kind is None:
                raise FatalPowerError(
                    f"Proxmox host {endpoint.name}: node {pve_node} has no VM or container {vmid}"
                )
            guest = _Guest(pve_node, kind, vmid)
        else:
            resources = await self._cluster_guests(endpoint, api, vmid)
            found = [r for r in resources if str(r.get("vmid")) == str(vmid)]
            if not found or found[0].get("type") not in _KIND_NAME:
                raise FatalPowerError(
                    f"Proxmox host {endpoint.name} has no VM or container {vmid}"
                    f" (its cluster lists {len(resources)} guests)"
                )
            guest = _Guest(str(found[0]["node"]), found[0]["type"], vmid)
        self._guests[node.node_id] = guest
        return endpoint, api, guest

    async def _cluster_guests(self, endpoint: ProxmoxEndpoint, api: Any, vmid: int) -> list[dict[str, Any]]:
        """``cluster/resources`` of this host, read once per run (again only for an id it lacked)."""
        async with self._locks[endpoint.host_id]:
            cached = self._resources.get(endpoint.host_id)
            if cached is not None and any(str(r.get("vmid")) == str(vmid) for r in cached):
                return cached
            listing: list[dict[str, Any]] = await call(endpoint, lambda: api.cluster.resources.get(type="vm"))
            self._resources[endpoint.host_id] = listing
            return listing

    async def _status(self, endpoint: ProxmoxEndpoint, api: Any, guest: _Guest) -> str:
        current = await call(
            endpoint, getattr(api.nodes(guest.node), guest.kind)(guest.vmid).status.current.get
        )
        return str(current.get("status", "unknown"))

    async def _task(
        self, endpoint: ProxmoxEndpoint, api: Any, guest: _Guest, verb: str, **params: Any
    ) -> None:
        """Start a guest task and follow its UPID until it ends; Proxmox's error text on failure."""
        resource = getattr(api.nodes(guest.node), guest.kind)(guest.vmid).status
        upid = await call(endpoint, lambda: getattr(resource, verb).post(**params))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._task_timeout + int(params.get("timeout", 0))
        pause = 0.1  # a start task usually ends within a second or two: look early, then back off
        while True:
            task = await call(endpoint, api.nodes(guest.node).tasks(upid).status.get)
            if task.get("status") == "stopped":
                exit_status = str(task.get("exitstatus", ""))
                if exit_status == "OK" or exit_status.startswith("WARNINGS"):
                    return
                raise FatalPowerError(f"Proxmox could not {verb} {guest.name}: {exit_status}")
            if loop.time() >= deadline:
                raise RetryablePowerError(f"Proxmox task {verb} of {guest.name} still running ({upid})")
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._poll)

    async def _on(self, node: NodeSnapshot) -> None:
        endpoint, api, guest = await self._guest(node)
        if await self._status(endpoint, api, guest) == "running":
            return
        await self._task(endpoint, api, guest, "start")
        status = await self._status(endpoint, api, guest)
        if status != "running":
            raise RetryablePowerError(f"Proxmox started {guest.name} but it is {status}")
        log.info("%s: started %s on Proxmox host %s", node.label, guest.name, endpoint.name)

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        endpoint, api, guest = await self._guest(node)
        if await self._status(endpoint, api, guest) == "stopped":
            return
        if soft:
            # ACPI shutdown; Proxmox itself stops the guest when it has not gone down by the timeout.
            await self._task(endpoint, api, guest, "shutdown", timeout=self._shutdown_timeout, forceStop=1)
        else:
            await self._task(endpoint, api, guest, "stop")
        log.info("%s: %s %s", node.label, "shut down" if soft else "stopped", guest.name)

    async def query(self, node: NodeSnapshot) -> PowerState:
        """running → on, stopped → off (Proxmox's ``status/current``)."""
        endpoint, api, guest = await self._guest(node)
        status = await self._status(endpoint, api, guest)
        return {"running": PowerState.ON, "stopped": PowerState.OFF}.get(status, PowerState.UNKNOWN)

    def close(self) -> None:
        """Close the HTTP sessions."""
        for api in self._apis.values():
            close(api)
        self._apis.clear()


def _kind_on_node(api: Any, pve_node: str, vmid: int) -> GuestKind | None:
    """Whether ``vmid`` on ``pve_node`` is a VM or a container (None: neither)."""
    from proxmoxer.core import ResourceException

    kinds: tuple[GuestKind, ...] = ("qemu", "lxc")
    for kind in kinds:
        try:
            getattr(api.nodes(pve_node), kind)(vmid).status.current.get()
        except ResourceException as exc:
            if "does not exist" in str(exc.content):
                continue
            raise
        return kind
    return None
