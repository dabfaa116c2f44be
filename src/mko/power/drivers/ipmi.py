"""IPMI over LAN (RMCP+): chassis power on, off, soft (ACPI) shutdown and status, through pyghmi.

pyghmi is blocking, so each call runs in a worker thread. The driver asks the BMC and returns at once
(``wait=False``); the schedule re-queries the chassis power state until it is reached. Bad credentials
are fatal; a BMC that does not answer is retryable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, SecretStr

from mko.platform.errors import FatalPowerError, RetryablePowerError
from mko.platform.validation import validate_port
from mko.power.base import Capability, NodeSnapshot, PowerDriver, PowerState
from mko.power.fields import BmcLogin, validate_host
from mko.power.params import DriverParams, param

__all__ = ["DEFAULT_IPMI_PORT", "IpmiDriver", "IpmiParams", "IpmiSettings", "restore_policy_of"]

log = logging.getLogger("mko.power.ipmi")

DEFAULT_IPMI_PORT = 623
# pyghmi's messages for credentials the BMC refused: retrying cannot help.
_AUTH_WORDS = ("password", "unauthorized", "privilege", "insufficient", "invalid user", "access denied")


class IpmiSettings(BaseModel):
    """A node's BMC; ``password`` is a secret."""

    address: str
    port: int = DEFAULT_IPMI_PORT
    username: str
    password: SecretStr


class IpmiParams(BmcLogin):
    """A node's BMC over IPMI (RMCP+)."""

    bmc_address: str | None = param(help="IPMI: BMC host name or address", check=validate_host)
    bmc_port: int | None = param(help="IPMI: BMC UDP port (623)", check=validate_port)

    required: ClassVar[tuple[str, ...]] = ("bmc_address", "bmc_username", "bmc_password")


class IpmiDriver(PowerDriver):
    """Chassis power through the node's BMC."""

    name: ClassVar[str] = "ipmi"
    Params: ClassVar[type[DriverParams]] = IpmiParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.SOFT_OFF, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "physical"
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True
    parallel: ClassVar[int] = 16
    label: ClassVar[str] = "IPMI"

    def settings_for(self, node: NodeSnapshot) -> IpmiSettings:
        """The node's BMC settings, password decrypted; FatalPowerError when incomplete."""
        params: IpmiParams = self.params(node)
        if not (params.bmc_address and params.bmc_username and params.bmc_password):
            raise FatalPowerError(
                f"{node.label} needs a BMC address, user and password for IPMI (`wol configure`)"
            )
        return IpmiSettings(
            address=params.bmc_address,
            port=params.bmc_port or DEFAULT_IPMI_PORT,
            username=params.bmc_username,
            password=SecretStr(self.reveal(params.bmc_password)),
        )

    async def _run(self, node: NodeSnapshot, request: str | None) -> dict[str, Any]:
        from pyghmi.exceptions import IpmiException  # imported when used: the registry reads IpmiParams

        bmc = self.settings_for(node)
        where = f"BMC {bmc.address}:{bmc.port} of {node.label}"
        try:
            return await asyncio.to_thread(_command, bmc, request)
        except IpmiException as exc:
            _forget(bmc)
            text = "" if exc.args[:1] in ((), (None,)) else str(exc)
            if any(word in text.lower() for word in _AUTH_WORDS):
                raise FatalPowerError(f"{where} refused the login: {text}") from None
            if not text or "timeout" in text.lower() or "no longer connected" in text.lower():
                raise RetryablePowerError(f"{where} did not answer") from None
            raise FatalPowerError(f"{where}: {text}") from None
        except OSError as exc:
            _forget(bmc)
            raise RetryablePowerError(f"{where}: {exc.strerror or exc}") from None

    async def _on(self, node: NodeSnapshot) -> None:
        await self._run(node, "on")

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        # "shutdown" is the chassis soft-off: the BMC raises an ACPI power-button event.
        await self._run(node, "shutdown" if soft else "off")

    async def query(self, node: NodeSnapshot) -> PowerState:
        """The chassis power state the BMC reports."""
        result = await self._run(node, None)
        return {"on": PowerState.ON, "off": PowerState.OFF}.get(
            str(result.get("powerstate")), PowerState.UNKNOWN
        )

    async def restore_policy(self, node: NodeSnapshot) -> str:
        """The chassis power restore policy (the BIOS "power on after AC loss"): ``always-off``,
        ``previous``, ``always-on`` or ``unknown``, from Get Chassis Status (IPMI v2.0 §28.2)."""
        result = await self._run(node, _CHASSIS_STATUS)
        return str(result["restore_policy"])


# NOTE: pyghmi keeps one session per BMC and user process-wide, hangs when a second Command is made
# for a session it already has (it waits for a login that is long over), and keeps failed logins in
# its cache, so a retry would wait on them. mko therefore keeps one Command per BMC and credentials
# for the whole process, uses it from one thread at a time, and after any error drops it together
# with pyghmi's leftover login so the next attempt logs in afresh.
_Key = tuple[str, int, str, str]


@dataclass
class _Link:
    lock: threading.Lock = field(default_factory=threading.Lock)
    command: Any = None  # a pyghmi Command


_links: dict[_Key, _Link] = {}
_links_lock = threading.Lock()


def _key(bmc: IpmiSettings) -> _Key:
    digest = hashlib.sha256(bmc.password.get_secret_value().encode()).hexdigest()
    return (bmc.address, bmc.port, bmc.username, digest)


# Get Chassis Status (netfn 0 chassis, command 1): byte 1 bits 6:5 hold the power restore policy.
_CHASSIS_STATUS = "chassis-status"
_RESTORE_POLICIES = ("always-off", "previous", "always-on", "unknown")


def restore_policy_of(data: bytes) -> str:
    """The power restore policy in a Get Chassis Status response (byte 1, bits 6:5)."""
    return _RESTORE_POLICIES[(data[0] >> 5) & 3]


def _command(bmc: IpmiSettings, request: str | None) -> dict[str, Any]:
    """Blocking: read the chassis power state (request None) or status (``_CHASSIS_STATUS``), or ask
    for a change without waiting."""
    from pyghmi.exceptions import IpmiException
    from pyghmi.ipmi.command import Command

    with _links_lock:
        link = _links.setdefault(_key(bmc), _Link())
    with link.lock:
        if link.command is None:
            link.command = Command(
                bmc=bmc.address, userid=bmc.username, password=bmc.password.get_secret_value(), port=bmc.port
            )
        if request is None:
            result: dict[str, Any] = link.command.get_power()
        elif request == _CHASSIS_STATUS:
            # pyghmi has no helper for it; its raw_command returns a failed completion code as "error".
            response = link.command.raw_command(netfn=0, command=1)
            if "error" in response:
                raise IpmiException(f"Get Chassis Status: {response['error']}", response.get("code"))
            data = bytes(response.get("data") or b"")
            if not data:
                raise IpmiException("Get Chassis Status returned no data")
            result = {"restore_policy": restore_policy_of(data), "data": data.hex()}
        else:
            result = link.command.set_power(request, wait=False)
        return result


def _forget(bmc: IpmiSettings) -> None:
    with _links_lock:
        link = _links.get(_key(bmc))
    if link is not None:
        link.command = None
    from pyghmi.ipmi.private import session as pyghmi_session

    stale = pyghmi_session.Session.initting_sessions
    for key in [k for k in list(stale) if k[:2] == (bmc.address, bmc.username) and k[3] == bmc.port]:
        stale.pop(key, None)
