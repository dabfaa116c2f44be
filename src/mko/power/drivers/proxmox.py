"""Proxmox VE: start and stop virtual machines and containers through the PVE API, with proxmoxer.

Waking a virtual node means: find its guest (the node named in mko, else ``cluster/resources``), ask
``status/current``, ``POST …/status/start`` if it is not running, follow the task (UPID) until it ends,
and check ``status/current`` says running. A failed task is reported with Proxmox's own error text.
Shutting down is an ACPI ``shutdown`` with a timeout after which Proxmox stops the guest (``soft``), or
an immediate ``stop`` (``off``). Every call runs in a worker thread (proxmoxer speaks blocking requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast

from pydantic import BaseModel, SecretStr

from mko.platform.errors import FatalPowerError, PowerError, RetryablePowerError
from mko.power.base import Capability, NodeSnapshot, PowerDriver, PowerState, ProxmoxEndpoint
from mko.power.fields import integer_range, validate_name
from mko.power.params import DriverParams, EncryptedSecret, column, param

if TYPE_CHECKING:
    from mko.platform.settings import Settings

__all__ = ["ProxmoxDriver", "ProxmoxParams", "ProxmoxSettings", "check_endpoint", "connect"]

log = logging.getLogger("mko.power.proxmox")

T = TypeVar("T")
GuestKind = Literal["qemu", "lxc"]
_KIND_NAME = {"qemu": "VM", "lxc": "container"}
# PVE answers most handler errors with HTTP 500; these texts mean "try again shortly".
_TRANSIENT = ("locked", "quorum", "got timeout", "try again", "temporarily")
_RETRYABLE_STATUS = {408, 429, 502, 503, 504, 595, 596}


class ProxmoxParams(DriverParams):
    """A virtual node: its guest id and the Proxmox host (the seed's fields) and, optionally, its node."""

    proxmox_vm_id: int | None = column(
        help="Proxmox VM (or container) id",
        option="--proxmox-vm-id",
        check=integer_range(100, 999_999_999, "a Proxmox VM id"),
    )
    proxmox_host_id: int | None = column(
        help="Proxmox API endpoint (mko proxmox list): the VM's, or a proxmox_host node's own",
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


def _adapter(fingerprint: str | None, pool_size: int) -> Any:
    """A requests adapter with ``pool_size`` connections; with a fingerprint it accepts exactly the
    certificate with that SHA-256 fingerprint (instead of a CA)."""
    from requests.adapters import HTTPAdapter  # imported when used: the registry reads ProxmoxParams

    class PinnedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["assert_fingerprint"] = fingerprint
            super().init_poolmanager(*args, **kwargs)

    return (PinnedAdapter if fingerprint else HTTPAdapter)(pool_maxsize=pool_size)


def _peer_fingerprint(host: str, port: int, timeout: float) -> str:
    context = ssl.create_default_context()
    # NOTE: a pinned self-signed PVE certificate fails CA validation by design; the pin replaces it.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True) or b""
    return hashlib.sha256(der).hexdigest()


def connect(endpoint: ProxmoxEndpoint, secret: str, timeout: float, pool_size: int = 16) -> Any:
    """A proxmoxer client for this host (blocking: logs in now when a password is used)."""
    from proxmoxer import ProxmoxAPI

    verify: bool | str = endpoint.ca_file or endpoint.verify_tls
    if endpoint.fingerprint:
        verify = False
        # The password login bypasses the session below, so check the pin before sending it.
        if not endpoint.token_id:
            seen = _peer_fingerprint(endpoint.host, endpoint.port, timeout)
            if seen != endpoint.fingerprint.replace(":", "").lower():
                raise FatalPowerError(
                    f"Proxmox host {endpoint.name}: the TLS certificate's SHA-256 fingerprint does not"
                    " match the pinned one"
                )
    if endpoint.token_id:
        user, _, token_name = endpoint.token_id.partition("!")
        api = ProxmoxAPI(
            endpoint.host,
            port=endpoint.port,
            user=user,
            token_name=token_name,
            token_value=secret,
            verify_ssl=verify,
            timeout=timeout,
        )
    else:
        api = ProxmoxAPI(
            endpoint.host,
            port=endpoint.port,
            user=endpoint.username,
            password=secret,
            verify_ssl=verify,
            timeout=timeout,
        )
    # As many pooled connections as guests started at once, so none is opened and thrown away per call.
    api._store["session"].mount("https://", _adapter(endpoint.fingerprint, pool_size))
    return api


def _translate(endpoint: ProxmoxEndpoint, exc: Exception) -> PowerError | None:  # noqa: PLR0911
    """mko's error for a proxmoxer/requests failure; None for anything else."""
    import requests
    from proxmoxer.core import AuthenticationError, ResourceException

    where = f"Proxmox host {endpoint.name} ({endpoint.host}:{endpoint.port})"
    if isinstance(exc, ResourceException):
        text = " ".join(str(exc.content or exc.status_message).split())
        if exc.errors:
            text += f" ({exc.errors})"
        if exc.status_code == 401:
            how = "API token" if endpoint.token_id else "user name and password"
            return FatalPowerError(f"{where} rejected the credentials ({text}): check the {how}")
        if exc.status_code == 403:
            return FatalPowerError(f"{where}: permission denied ({text})")
        if exc.status_code in _RETRYABLE_STATUS or any(t in text.lower() for t in _TRANSIENT):
            return RetryablePowerError(f"{where}: {text}")
        return FatalPowerError(f"{where}: {text}")
    if isinstance(exc, AuthenticationError):
        return FatalPowerError(f"{where} rejected the login: check the user name and password")
    if isinstance(exc, requests.exceptions.SSLError):
        reason = "certificate verification failed"
        if "fingerprint" in str(exc).lower():
            reason = "the TLS certificate's SHA-256 fingerprint does not match the pinned one"
        return FatalPowerError(
            f"{where}: {reason}; give its CA file (--ca-file) or pin its fingerprint (--fingerprint)"
        )
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return RetryablePowerError(f"{where} did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return RetryablePowerError(f"{where} is unreachable")
    if isinstance(exc, OSError):
        return RetryablePowerError(f"{where}: {exc.strerror or exc}")
    return None


async def _call(endpoint: ProxmoxEndpoint, fn: Callable[[], T]) -> T:
    """Run one blocking proxmoxer call in a worker thread, translating its errors."""

    def guarded() -> tuple[T | None, PowerError | None]:
        # Translated in the thread: the original exception (whose traceback holds the HTTP response
        # and so its connection) dies here instead of travelling through futures into a GC cycle.
        try:
            return fn(), None
        except PowerError as exc:
            return None, exc
        except Exception as exc:
            error = _translate(endpoint, exc)
            if error is None:
                raise
            return None, error

    result, error = await asyncio.to_thread(guarded)
    if error is not None:
        raise error
    return cast(T, result)


async def check_endpoint(endpoint: ProxmoxEndpoint, secret: str, timeout: float) -> dict[str, Any]:
    """Log in and read the version, nodes and guests: what `mko proxmox test` shows."""
    api = await _call(endpoint, lambda: connect(endpoint, secret, timeout))
    try:
        version = await _call(endpoint, api.version.get)
        guests = await _call(endpoint, lambda: api.cluster.resources.get(type="vm"))
        nodes = await _call(endpoint, api.nodes.get)
    finally:
        api._store["session"].close()
    return {
        "ok": True,
        "version": version.get("version"),
        "release": version.get("release"),
        "nodes": sorted(str(n.get("node")) for n in nodes),
        "guests": len(guests),
    }


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
                self._apis[endpoint.host_id] = await _call(
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
            kind = await _call(endpoint, lambda: _kind_on_node(api, pve_node, vmid))
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
            listing: list[dict[str, Any]] = await _call(
                endpoint, lambda: api.cluster.resources.get(type="vm")
            )
            self._resources[endpoint.host_id] = listing
            return listing

    async def _status(self, endpoint: ProxmoxEndpoint, api: Any, guest: _Guest) -> str:
        current = await _call(
            endpoint, getattr(api.nodes(guest.node), guest.kind)(guest.vmid).status.current.get
        )
        return str(current.get("status", "unknown"))

    async def _task(
        self, endpoint: ProxmoxEndpoint, api: Any, guest: _Guest, verb: str, **params: Any
    ) -> None:
        """Start a guest task and follow its UPID until it ends; Proxmox's error text on failure."""
        resource = getattr(api.nodes(guest.node), guest.kind)(guest.vmid).status
        upid = await _call(endpoint, lambda: getattr(resource, verb).post(**params))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._task_timeout + int(params.get("timeout", 0))
        pause = 0.1  # a start task usually ends within a second or two: look early, then back off
        while True:
            task = await _call(endpoint, api.nodes(guest.node).tasks(upid).status.get)
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
            with contextlib.suppress(Exception):
                api._store["session"].close()
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
