"""Redfish: ``ComputerSystem.Reset`` (On, GracefulShutdown, ForceOff) and ``PowerState``, over httpx.

The system is the one named on the node (``redfish_system_id``), else the BMC's only system. Requests
use HTTP Basic authentication and verify TLS by default (with the node's CA file when it has one). A
Reset the BMC accepted (2xx) is not repeated; the schedule re-reads ``PowerState`` until it is reached.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, SecretStr

from mko.platform.errors import FatalPowerError, RetryablePowerError, UnsupportedActionError
from mko.power.base import Capability, NodeSnapshot, PowerDriver, PowerState
from mko.power.fields import BmcLogin, validate_ca_file, validate_name, validate_redfish_url
from mko.power.http import is_certificate_error
from mko.power.params import DriverParams, param

if TYPE_CHECKING:
    import httpx

    from mko.platform.settings import Settings

__all__ = ["RedfishDriver", "RedfishParams", "RedfishSettings"]

log = logging.getLogger("mko.power.redfish")

SYSTEMS = "/redfish/v1/Systems"
_RESET_ACTION = "#ComputerSystem.Reset"
_STATES = {"On": PowerState.ON, "Off": PowerState.OFF, "Paused": PowerState.ON}


class RedfishSettings(BaseModel):
    """A node's Redfish service; ``password`` is a secret."""

    url: str
    username: str
    password: SecretStr
    system_id: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None


def _error_text(response: httpx.Response) -> str:
    """The BMC's own message from a Redfish error body, else the HTTP reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        infos = error.get("@Message.ExtendedInfo") or []
        messages = [str(i["Message"]) for i in infos if isinstance(i, dict) and i.get("Message")]
        text = error.get("message") or "; ".join(messages)
        if text:
            return " ".join(str(text).split())
    return f"HTTP {response.status_code} {response.reason_phrase}"


class RedfishParams(BmcLogin):
    """A node's BMC over Redfish."""

    redfish_url: str | None = param(
        help="Redfish: service URL, e.g. https://10.0.0.5", check=validate_redfish_url
    )
    redfish_system_id: str | None = param(help="Redfish: system id (default: the only)", check=validate_name)
    bmc_verify_tls: bool = param(True, help="Redfish: verify the BMC's certificate")
    bmc_ca_file: str | None = param(help="Redfish: CA file for the BMC's certificate", check=validate_ca_file)

    required: ClassVar[tuple[str, ...]] = ("redfish_url", "bmc_username", "bmc_password")


class RedfishDriver(PowerDriver):
    """Powers a node through its BMC's Redfish service."""

    name: ClassVar[str] = "redfish"
    Params: ClassVar[type[DriverParams]] = RedfishParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.SOFT_OFF, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "physical"
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True
    parallel: ClassVar[int] = 32
    label: ClassVar[str] = "Redfish"

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._systems: dict[int, str] = {}

    @classmethod
    def create(cls, settings: Settings) -> RedfishDriver:
        """A driver with the settings' timeout and secret key."""
        return cls(settings.power_api_timeout)

    def settings_for(self, node: NodeSnapshot) -> RedfishSettings:
        """The node's Redfish settings, password decrypted; FatalPowerError when incomplete."""
        params: RedfishParams = self.params(node)
        if not (params.redfish_url and params.bmc_username and params.bmc_password):
            raise FatalPowerError(f"{node.label} needs a Redfish URL, user and password (`wol configure`)")
        return RedfishSettings(
            url=params.redfish_url,
            username=params.bmc_username,
            password=SecretStr(self.reveal(params.bmc_password)),
            system_id=params.redfish_system_id,
            verify_tls=params.bmc_verify_tls,
            ca_file=params.bmc_ca_file,
        )

    def _client(self, node: NodeSnapshot) -> httpx.AsyncClient:
        import httpx  # loaded when a driver talks, not when its settings are read

        if node.node_id not in self._clients:
            config = self.settings_for(node)
            verify: ssl.SSLContext | bool = config.verify_tls
            if config.ca_file:
                try:
                    verify = ssl.create_default_context(cafile=config.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise FatalPowerError(
                        f"{node.label}: cannot read CA file {config.ca_file}: {exc}"
                    ) from None
            self._clients[node.node_id] = httpx.AsyncClient(
                base_url=config.url.rstrip("/"),
                auth=httpx.BasicAuth(config.username, config.password.get_secret_value()),
                verify=verify,
                timeout=self._timeout,
                headers={"Accept": "application/json", "OData-Version": "4.0"},
            )
        return self._clients[node.node_id]

    async def _request(
        self, node: NodeSnapshot, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        import httpx  # loaded when a driver talks, not when its settings are read

        client = self._client(node)
        where = f"Redfish service {client.base_url} of {node.label}"
        try:
            response = await client.request(method, path, json=body)
        except httpx.TimeoutException:
            raise RetryablePowerError(f"{where} did not answer in time") from None
        except httpx.TransportError as exc:
            if is_certificate_error(exc):
                raise FatalPowerError(
                    f"{where}: TLS certificate verification failed; give the BMC's CA file (--bmc-ca-file)"
                ) from None
            raise RetryablePowerError(f"{where} is unreachable: {exc}") from None
        if response.is_success:
            return response
        text = _error_text(response)
        if response.status_code in (401, 403):
            raise FatalPowerError(f"{where} rejected the credentials ({text})")
        if response.status_code == 404:
            raise FatalPowerError(f"{where}: {path} not found ({text})")
        if response.status_code in (500, 502, 503, 504) or response.status_code == 429:
            raise RetryablePowerError(f"{where}: {text}")
        raise FatalPowerError(f"{where}: {text}")

    async def _system_path(self, node: NodeSnapshot) -> str:
        if node.node_id not in self._systems:
            system_id = self.params(node).redfish_system_id
            if system_id:
                path = f"{SYSTEMS}/{system_id}"
            else:
                members = (await self._request(node, "GET", SYSTEMS)).json().get("Members", [])
                if len(members) != 1:
                    ids = ", ".join(str(m.get("@odata.id", "?")).rsplit("/", 1)[-1] for m in members)
                    raise FatalPowerError(
                        f"{node.label}: the BMC has {len(members)} systems ({ids or 'none'}); name one"
                        " with --redfish-system-id"
                    )
                path = str(members[0]["@odata.id"])
            self._systems[node.node_id] = path
        return self._systems[node.node_id]

    async def _system(self, node: NodeSnapshot) -> dict[str, Any]:
        system: dict[str, Any] = (await self._request(node, "GET", await self._system_path(node))).json()
        return system

    async def _reset(self, node: NodeSnapshot, reset_type: str, skip_if: PowerState) -> None:
        system = await self._system(node)
        if _STATES.get(str(system.get("PowerState"))) == skip_if:
            return
        action = system.get("Actions", {}).get(_RESET_ACTION, {})
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if allowed is not None and reset_type not in allowed:
            raise UnsupportedActionError(
                f"{node.label}: the BMC does not offer ResetType {reset_type}"
                f" (it offers {', '.join(allowed)})"
            )
        target = action.get("target") or f"{await self._system_path(node)}/Actions/ComputerSystem.Reset"
        await self._request(node, "POST", target, {"ResetType": reset_type})
        log.info("%s: Redfish reset %s accepted", node.label, reset_type)

    async def _on(self, node: NodeSnapshot) -> None:
        await self._reset(node, "On", skip_if=PowerState.ON)

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        await self._reset(node, "GracefulShutdown" if soft else "ForceOff", skip_if=PowerState.OFF)

    async def query(self, node: NodeSnapshot) -> PowerState:
        """The system's ``PowerState`` (PoweringOn/PoweringOff read as unknown)."""
        return _STATES.get(str((await self._system(node)).get("PowerState")), PowerState.UNKNOWN)

    async def restore_policy(self, node: NodeSnapshot) -> str | None:
        """``ComputerSystem.PowerRestorePolicy`` (``AlwaysOn``, ``AlwaysOff``, ``LastState``), or None
        when the service does not expose it (many keep it among vendor BIOS attributes instead)."""
        policy = (await self._system(node)).get("PowerRestorePolicy")
        return None if policy is None else str(policy)

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
