"""Switched PDU outlets over SNMP v2c or v3 (pysnmp): on, off, reboot (cycle) and status.

One node is one outlet of a PDU. The profile names the vendor's MIB (N = outlet, U = unit):

* ``apc``: PowerNet-MIB rPDUOutletControlOutletCommand ``.318.1.1.12.3.3.1.1.4.N``, written 1 on,
  2 off, 3 reboot; the same OID reads the state, 1 on / 2 off (as MAAS, Ironic and fence-agents do);
* ``apc_rpdu2``: rPDU2OutletSwitchedControlCommand ``.318.1.1.26.9.2.4.1.5.N`` (1/2/3); the state from
  rPDU2OutletSwitchedStatusState ``.318.1.1.26.9.2.3.1.5.N``, which reads off(1), on(2): inverted;
* ``eaton``: EATON-EPDU-MIB outletControlOnCmd / OffCmd / RebootCmd ``.534.6.6.7.6.6.1.{4,3,5}.U.N``
  written 0 (now), U the daisy-chain unit (0); outletControlStatus ``.2.U.N``: 0 off, 1 on,
  2 pendingOff (still on), 3 pendingOn (still off);
* ``raritan``: PDU2-MIB switchingOperation ``.13742.6.4.1.2.1.2.U.N`` written 1 on, 0 off, 2 cycle, U
  the PDU id (1); outletSwitchingState ``.13742.6.4.1.2.1.3.U.N``: 7 on, 8 off.

The state is read before every command, so an outlet already in the wanted state is left alone (a
second reboot would cut the node again). A SET answered without an error was applied or queued
(``confirms_delivery``); the schedule then re-reads the state. One request at a time goes to one PDU
(old management cards drop concurrent ones), and ``device_key`` lets a wake stagger outlets per PDU.

Errors: no answer (an unreachable agent and a wrong v2c community look the same) is retryable; wrong
v3 keys or user, a read-only community (notWritable/noAccess), an outlet the PDU lacks
(NoSuchInstance) or a wrong profile are fatal.

Example, outlet 3 of an APC AP7902B, SNMPv3 user ``mko`` with SHA/AES::

    mko wol configure 14 --method snmp_pdu --snmp-host 10.0.0.30 --snmp-outlet 3 --snmp-profile apc \\
      --snmp-version 3 --snmp-user mko --snmp-auth-key ? --snmp-priv-key ?
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from mko.platform.errors import FatalPowerError, InputError, RetryablePowerError
from mko.platform.validation import validate_port
from mko.power.base import Capability, NodeSnapshot, PowerDriver, PowerState
from mko.power.fields import choice, integer_range, validate_host, validate_name
from mko.power.params import DriverParams, StoredSecret, param, secret

__all__ = ["PROFILES", "SnmpPduDriver", "SnmpPduParams"]


@dataclass(frozen=True)
class Profile:
    """One vendor's outlet OIDs and values."""

    command: dict[str, str]  # action → OID template ({u} unit, {n} outlet)
    values: dict[str, int]  # action → value written
    state: str  # OID template read for the state
    on: frozenset[int]
    off: frozenset[int]
    unit: int = 0


PROFILES: dict[str, Profile] = {
    "apc": Profile(
        command=dict.fromkeys(("on", "off", "cycle"), "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.{n}"),
        values={"on": 1, "off": 2, "cycle": 3},
        state="1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.{n}",
        on=frozenset({1}),
        off=frozenset({2}),
    ),
    "apc_rpdu2": Profile(
        command=dict.fromkeys(("on", "off", "cycle"), "1.3.6.1.4.1.318.1.1.26.9.2.4.1.5.{n}"),
        values={"on": 1, "off": 2, "cycle": 3},
        state="1.3.6.1.4.1.318.1.1.26.9.2.3.1.5.{n}",
        on=frozenset({2}),  # rPDU2OutletSwitchedStatusState is off(1), on(2): the commands' opposite
        off=frozenset({1}),
    ),
    "eaton": Profile(
        command={
            "on": "1.3.6.1.4.1.534.6.6.7.6.6.1.4.{u}.{n}",
            "off": "1.3.6.1.4.1.534.6.6.7.6.6.1.3.{u}.{n}",
            "cycle": "1.3.6.1.4.1.534.6.6.7.6.6.1.5.{u}.{n}",
        },
        values={"on": 0, "off": 0, "cycle": 0},  # seconds until it happens: now
        state="1.3.6.1.4.1.534.6.6.7.6.6.1.2.{u}.{n}",
        on=frozenset({1, 2}),  # pendingOff is still on
        off=frozenset({0, 3}),  # pendingOn is still off
    ),
    "raritan": Profile(
        command=dict.fromkeys(("on", "off", "cycle"), "1.3.6.1.4.1.13742.6.4.1.2.1.2.{u}.{n}"),
        values={"on": 1, "off": 0, "cycle": 2},
        state="1.3.6.1.4.1.13742.6.4.1.2.1.3.{u}.{n}",
        on=frozenset({7}),
        off=frozenset({8}),
        unit=1,
    ),
}
AUTH_PROTOCOLS = ("sha", "sha224", "sha256", "sha384", "sha512", "md5", "none")
PRIV_PROTOCOLS = ("aes", "aes192", "aes256", "des", "none")
# error-status names after which asking again may help
_RETRYABLE_STATUS = ("genErr", "resourceUnavailable", "commitFailed", "tooBig")


def _key(value: str, field: str) -> str:
    if not 8 <= len(value) <= 128 or any(not c.isprintable() for c in value):
        raise InputError(field, "an SNMPv3 key is 8 to 128 printable characters")
    return value


def _community(value: str, field: str) -> str:
    if not 1 <= len(value) <= 64 or any(not c.isprintable() for c in value):
        raise InputError(field, "a community is 1 to 64 printable characters")
    return value


_SNMP_TARGET = ("snmp_host", "snmp_port", "snmp_version")


class SnmpPduParams(DriverParams):
    """A PDU outlet and how to reach the PDU's SNMP agent."""

    snmp_host: str | None = param(help="SNMP PDU: the PDU's host name or address", check=validate_host)
    snmp_port: int | None = param(help="SNMP PDU: agent UDP port (161)", check=validate_port)
    snmp_outlet: int | None = param(
        help="SNMP PDU: outlet number", check=integer_range(1, 4096, "an outlet number")
    )
    snmp_profile: str | None = param(
        help="SNMP PDU: MIB: apc, apc_rpdu2, eaton or raritan (apc)", check=choice(tuple(PROFILES))
    )
    snmp_unit: int | None = param(
        help="SNMP PDU: daisy-chain unit (Eaton 0, Raritan PDU id 1)",
        check=integer_range(0, 255, "a PDU unit"),
    )
    snmp_version: str | None = param(help="SNMP PDU: 2c or 3 (2c)", check=choice(("2c", "3")))
    snmp_community: StoredSecret = secret(
        help="SNMP PDU: v2c write community", check=_community, binds=_SNMP_TARGET
    )
    snmp_user: str | None = param(help="SNMP PDU: v3 user", check=validate_name)
    snmp_auth_protocol: str | None = param(
        help="SNMP PDU: v3 authentication: sha (default), sha256, … or none", check=choice(AUTH_PROTOCOLS)
    )
    snmp_auth_key: StoredSecret = secret(
        help="SNMP PDU: v3 authentication key", check=_key, binds=(*_SNMP_TARGET, "snmp_user")
    )
    snmp_priv_protocol: str | None = param(
        help="SNMP PDU: v3 privacy: aes (default), aes256, des or none", check=choice(PRIV_PROTOCOLS)
    )
    snmp_priv_key: StoredSecret = secret(
        help="SNMP PDU: v3 privacy key", check=_key, binds=(*_SNMP_TARGET, "snmp_user")
    )
    snmp_context: str | None = param(help="SNMP PDU: v3 context name (usually empty)", check=validate_name)

    required: ClassVar[tuple[str, ...]] = ("snmp_host", "snmp_outlet")

    def protocols(self) -> tuple[str, str]:
        """SNMP v3's authentication and privacy protocols: as set, else SHA and AES where a key is given,
        else none."""
        auth = self.snmp_auth_protocol or ("sha" if self.snmp_auth_key is not None else "none")
        priv = self.snmp_priv_protocol or ("aes" if self.snmp_priv_key is not None else "none")
        return auth, priv

    def needed(self) -> tuple[str, ...]:
        """v2c: the write community; v3: its user and the key of each protocol in use (privacy needs
        authentication too)."""
        if (self.snmp_version or "2c") == "2c":
            return ("snmp_community",)
        auth, priv = self.protocols()
        keys = ("snmp_auth_key",) if auth != "none" or priv != "none" else ()
        return ("snmp_user", *keys, *(("snmp_priv_key",) if priv != "none" else ()))


class SnmpPduDriver(PowerDriver):
    """Switches and reads PDU outlets over SNMP."""

    name: ClassVar[str] = "snmp_pdu"
    label: ClassVar[str] = "SNMP PDU"
    badge: ClassVar[str] = "PDU"
    Params: ClassVar[type[DriverParams]] = SnmpPduParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.CYCLE, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "physical"
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True

    def __init__(self, timeout: float = 2.0, retries: int = 1) -> None:
        self._timeout = timeout
        self._retries = retries
        self._engine: Any = None
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def create(cls, settings: Any) -> SnmpPduDriver:
        """A driver whose requests wait at most the settings' API timeout (split over two tries)."""
        return cls(timeout=max(0.5, settings.power_api_timeout / 2), retries=1)

    def device_key(self, node: NodeSnapshot) -> str | None:
        """The PDU: its outlets share one SNMP agent."""
        params: SnmpPduParams = self.params(node)
        return f"snmp:{params.snmp_host}:{params.snmp_port or 161}"

    def _auth(self, node: NodeSnapshot, params: SnmpPduParams) -> Any:
        from pysnmp.hlapi.v3arch import asyncio as hl

        if (params.snmp_version or "2c") == "2c":
            if params.snmp_community is None:
                raise FatalPowerError(f"{node.label}: SNMP v2c needs the PDU's write community")
            # v2c is what many PDUs in the field speak; v3 is offered beside it and recommended in the docs.
            return hl.CommunityData(self.reveal(params.snmp_community), mpModel=1)  # noqa: S508
        if not params.snmp_user:
            raise FatalPowerError(f"{node.label}: SNMP v3 needs a user (--snmp-user)")
        auth_name, priv_name = params.protocols()
        auth = {
            "md5": hl.usmHMACMD5AuthProtocol,
            "sha": hl.usmHMACSHAAuthProtocol,
            "sha224": hl.usmHMAC128SHA224AuthProtocol,
            "sha256": hl.usmHMAC192SHA256AuthProtocol,
            "sha384": hl.usmHMAC256SHA384AuthProtocol,
            "sha512": hl.usmHMAC384SHA512AuthProtocol,
            "none": hl.usmNoAuthProtocol,
        }[auth_name]
        priv = {
            "aes": hl.usmAesCfb128Protocol,
            "aes192": hl.usmAesCfb192Protocol,
            "aes256": hl.usmAesCfb256Protocol,
            "des": hl.usmDESPrivProtocol,
            "none": hl.usmNoPrivProtocol,
        }[priv_name]
        auth_key = self.reveal(params.snmp_auth_key) if params.snmp_auth_key is not None else None
        priv_key = self.reveal(params.snmp_priv_key) if params.snmp_priv_key is not None else None
        if (auth_name != "none" and auth_key is None) or (priv_name != "none" and priv_key is None):
            raise FatalPowerError(f"{node.label}: SNMP v3 {auth_name}/{priv_name} needs its keys")
        return hl.UsmUserData(
            params.snmp_user, authKey=auth_key, privKey=priv_key, authProtocol=auth, privProtocol=priv
        )

    async def _request(self, node: NodeSnapshot, oid: str, value: int | None) -> int:
        """GET ``oid`` (value None) or SET it to an Integer32; the integer the agent answers."""
        from pysnmp.hlapi.v3arch import asyncio as hl

        params: SnmpPduParams = self.params(node)
        if not params.snmp_host:
            raise FatalPowerError(f"{node.label} needs its PDU's host (`wol configure`)")
        if self._engine is None:
            self._engine = hl.SnmpEngine()
        where = f"PDU {params.snmp_host} outlet {params.snmp_outlet} of {node.label}"
        try:
            target = await hl.UdpTransportTarget.create(
                (params.snmp_host, params.snmp_port or 161), timeout=self._timeout, retries=self._retries
            )
        except Exception as exc:  # name resolution: pysnmp raises its own error types
            raise RetryablePowerError(f"{where}: cannot resolve the address ({exc})") from None
        context = hl.ContextData(contextName=params.snmp_context or "")
        auth = self._auth(node, params)
        if value is None:
            call = hl.get_cmd(self._engine, auth, target, context, hl.ObjectType(hl.ObjectIdentity(oid)))
        else:
            bind = hl.ObjectType(hl.ObjectIdentity(oid), hl.Integer32(value))
            call = hl.set_cmd(self._engine, auth, target, context, bind)
        async with self._locks.setdefault(self.device_key(node) or "", asyncio.Lock()):
            indication, status, _index, binds = await call
        what = f"GET {oid}" if value is None else f"SET {oid}={value}"
        if indication:
            kind = type(indication).__name__
            if kind == "RequestTimedOut":
                raise RetryablePowerError(
                    f"{where}: no answer to {what}; check the address and community/user"
                )
            raise FatalPowerError(f"{where}: {what}: {indication} (check the SNMPv3 user and keys)")
        if status:
            text = status.prettyPrint()
            if text in _RETRYABLE_STATUS:
                raise RetryablePowerError(f"{where}: {what}: {text}")
            raise FatalPowerError(f"{where}: {what}: {text} (a read-only community, or the wrong profile?)")
        answer = binds[0][1]
        if type(answer).__name__ in ("NoSuchObject", "NoSuchInstance", "EndOfMibView"):
            raise FatalPowerError(f"{where}: {what}: the PDU has no such outlet (or the profile is wrong)")
        return int(answer)

    def _profile(self, node: NodeSnapshot) -> tuple[Profile, dict[str, int]]:
        params: SnmpPduParams = self.params(node)
        profile = PROFILES[params.snmp_profile or "apc"]
        if params.snmp_outlet is None:
            raise FatalPowerError(f"{node.label} needs its PDU outlet number (`wol configure`)")
        unit = profile.unit if params.snmp_unit is None else params.snmp_unit
        return profile, {"n": params.snmp_outlet, "u": unit}

    async def query(self, node: NodeSnapshot) -> PowerState:
        """The outlet's state as the PDU reports it."""
        profile, index = self._profile(node)
        value = await self._request(node, profile.state.format(**index), None)
        if value in profile.on:
            return PowerState.ON
        return PowerState.OFF if value in profile.off else PowerState.UNKNOWN

    async def _switch(self, node: NodeSnapshot, action: str, skip_if: PowerState | None) -> None:
        profile, index = self._profile(node)
        if skip_if is not None and await self.query(node) == skip_if:
            return
        await self._request(node, profile.command[action].format(**index), profile.values[action])

    async def _on(self, node: NodeSnapshot) -> None:
        await self._switch(node, "on", PowerState.ON)

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        await self._switch(node, "off", PowerState.OFF)

    async def _cycle(self, node: NodeSnapshot) -> None:
        await self._switch(node, "cycle", None)

    async def aclose(self) -> None:
        """Stop the SNMP engine's dispatcher (one per driver instance, so per event loop)."""
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None
