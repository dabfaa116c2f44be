"""Shelly relays and smart plugs: Gen1 (REST ``/relay/<n>?turn=on|off``) and Gen2+ (JSON-RPC
``/rpc/Switch.Set?id=<n>&on=true``), detected from ``GET /shelly`` (no ``gen`` key: Gen1).

Gen1 protects its API with HTTP Basic (user ``admin`` unless set otherwise); Gen2 and later with RFC 7616
digest, SHA-256, user always ``admin``. ``cycle`` switches the relay off with an auto-on timer
(Gen1 ``turn=off&timer=N``, Gen2 ``toggle_after=N``), so the plug itself turns the node back on even if
mko loses power in between.

Example: a Shelly Plus Plug S (Gen2) at 192.168.1.60 feeding a NAS::

    mko wol configure 9 --method shelly --shelly-host 192.168.1.60 --shelly-password ?
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mko.platform.errors import FatalPowerError, InputError
from mko.platform.validation import validate_port
from mko.power.base import Capability, NodeSnapshot
from mko.power.fields import integer_range, validate_bmc_user, validate_host, validate_secret
from mko.power.http import HttpDeviceDriver, json_object, request
from mko.power.params import DriverParams, StoredSecret, param, secret

if TYPE_CHECKING:
    import httpx

__all__ = ["ShellyDriver", "ShellyParams"]


def _generation(value: str, field: str) -> str:
    if value not in ("auto", "1", "2"):
        raise InputError(
            field, f"{value!r} is not a Shelly generation: auto, 1 or 2 (2 also means Gen3/Gen4)"
        )
    return value


class ShellyParams(DriverParams):
    """A Shelly device and the channel that feeds the node."""

    shelly_host: str | None = param(help="Shelly: the device's host name or address", check=validate_host)
    shelly_port: int | None = param(help="Shelly: HTTP port (80)", check=validate_port)
    shelly_channel: int | None = param(
        help="Shelly: relay/switch channel (0)", check=integer_range(0, 15, "a Shelly channel")
    )
    shelly_generation: str | None = param(help="Shelly: API generation: auto, 1 or 2", check=_generation)
    shelly_username: str | None = param(help="Shelly: Gen1 user (admin); Gen2 is always admin",
                                        check=validate_bmc_user)  # fmt: skip
    shelly_password: StoredSecret = secret(
        help="Shelly: device password", check=validate_secret, binds=("shelly_host", "shelly_port")
    )
    shelly_cycle_seconds: int | None = param(
        help="Shelly: seconds off during a cycle (5)", check=integer_range(1, 3600, unit="seconds")
    )

    required: ClassVar[tuple[str, ...]] = ("shelly_host",)


class ShellyDriver(HttpDeviceDriver):
    """Switches a Shelly relay and reads it back (Gen1 REST or Gen2+ RPC)."""

    name: ClassVar[str] = "shelly"
    label: ClassVar[str] = "Shelly"
    Params: ClassVar[type[DriverParams]] = ShellyParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.CYCLE, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "physical"
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True

    def __init__(self, timeout: float = 10.0) -> None:
        super().__init__(timeout)
        self._generations: dict[str, int] = {}

    def device_key(self, node: NodeSnapshot) -> str | None:
        """The device: its channels share one small web server."""
        params: ShellyParams = self.params(node)
        return f"shelly:{params.shelly_host}:{params.shelly_port or 80}"

    def _base(self, node: NodeSnapshot) -> tuple[ShellyParams, str, str]:
        params: ShellyParams = self.params(node)
        if not params.shelly_host:
            raise FatalPowerError(f"{node.label} needs its Shelly host (`wol configure`)")
        host = f"[{params.shelly_host}]" if ":" in params.shelly_host else params.shelly_host
        return (
            params,
            f"http://{host}:{params.shelly_port or 80}",
            f"Shelly {params.shelly_host} of {node.label}",
        )

    async def _generation(self, node: NodeSnapshot) -> int:
        params, base, where = self._base(node)
        if params.shelly_generation in ("1", "2"):
            return int(params.shelly_generation)
        if base not in self._generations:
            info = (await request(self._client, "GET", f"{base}/shelly", where=where)).json()
            self._generations[base] = int(info.get("gen", 1)) if isinstance(info, dict) else 1
        return self._generations[base]

    def _auth(self, params: ShellyParams, generation: int) -> httpx.Auth | None:
        import httpx  # loaded when a driver talks, not when its settings are read

        if params.shelly_password is None:
            return None
        password = self.reveal(params.shelly_password)
        if generation >= 2:
            return httpx.DigestAuth("admin", password)  # SHA-256 digest, realm = the device id
        return httpx.BasicAuth(params.shelly_username or "admin", password)

    async def _switch(self, node: NodeSnapshot, on: bool | None) -> bool:
        return await self._call(node, on=on)

    async def _call(self, node: NodeSnapshot, *, on: bool | None, toggle_after: int | None = None) -> bool:
        """Switch (``on`` given) or read the channel; the output state the device reports."""
        params, base, where = self._base(node)
        generation = await self._generation(node)
        channel = params.shelly_channel or 0
        auth = self._auth(params, generation)
        if generation >= 2:
            query: dict[str, Any] = {"id": channel}
            if on is None:
                result = await self._rpc(f"{base}/rpc/Switch.GetStatus", query, auth, where)
                return bool(result.get("output"))
            query["on"] = "true" if on else "false"
            if toggle_after is not None:
                query["toggle_after"] = toggle_after
            await self._rpc(f"{base}/rpc/Switch.Set", query, auth, where)
            return on
        gen1: dict[str, Any] = {} if on is None else {"turn": "on" if on else "off"}
        if toggle_after is not None:
            gen1["timer"] = toggle_after
        response = await request(
            self._client, "GET", f"{base}/relay/{channel}", where=where, params=gen1, auth=auth
        )
        body = json_object(response, where)
        if "ison" not in body:
            raise FatalPowerError(f"{where} answered without the relay's state: {body}")
        return bool(body["ison"])

    async def _rpc(
        self, url: str, query: dict[str, Any], auth: httpx.Auth | None, where: str
    ) -> dict[str, Any]:
        try:
            response = await request(self._client, "GET", url, where=where, params=query, auth=auth)
        except FatalPowerError as exc:
            raise FatalPowerError(f"{exc} (channel {query.get('id')})") from None
        return json_object(response, where)

    async def _cycle(self, node: NodeSnapshot) -> None:
        seconds = self.params(node).shelly_cycle_seconds or 5
        await self._call(node, on=False, toggle_after=seconds)
