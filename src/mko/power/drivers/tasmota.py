"""Tasmota smart plugs and relays: ``/cm?cmnd=Power<n> On|Off`` and ``Power<n>`` for the state.

Tasmota answers ``{"POWER": "ON"}`` on a single-relay device and ``{"POWER2": "OFF"}`` for an indexed
relay (a single-relay device may answer ``POWER`` even to ``Power1``, so both keys are read). With a web
password set, mko sends HTTP Basic (user ``admin``, Tasmota's WEB_USERNAME), so the password never sits
in a URL or a log line. A ``WARNING`` body is an authentication failure whatever the status code (older
firmware answered 200). ``{"Command": "Unknown"}`` means no such relay.

Example: a Sonoff S31 running Tasmota 13 at 192.168.1.50, relay 1::

    mko wol configure 7 --method tasmota --tasmota-host 192.168.1.50 --tasmota-password ?
"""

from __future__ import annotations

from typing import ClassVar, Literal

from mko.platform.errors import FatalPowerError
from mko.platform.validation import validate_port
from mko.power.base import Capability, NodeSnapshot
from mko.power.fields import integer_range, validate_host, validate_secret
from mko.power.http import HttpDeviceDriver, json_object, request
from mko.power.params import DriverParams, StoredSecret, param, secret

__all__ = ["TasmotaDriver", "TasmotaParams"]


class TasmotaParams(DriverParams):
    """A Tasmota device and which of its relays feeds the node."""

    tasmota_host: str | None = param(help="Tasmota: the plug's host name or address", check=validate_host)
    tasmota_port: int | None = param(help="Tasmota: HTTP port (80)", check=validate_port)
    tasmota_relay: int | None = param(
        help="Tasmota: relay number (default: the first)",
        check=integer_range(1, 32, "a Tasmota relay number"),
    )
    tasmota_password: StoredSecret = secret(
        help="Tasmota: web password", check=validate_secret, binds=("tasmota_host", "tasmota_port")
    )

    required: ClassVar[tuple[str, ...]] = ("tasmota_host",)


class TasmotaDriver(HttpDeviceDriver):
    """Switches a Tasmota relay and reads it back."""

    name: ClassVar[str] = "tasmota"
    label: ClassVar[str] = "Tasmota"
    Params: ClassVar[type[DriverParams]] = TasmotaParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "physical"
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True

    def device_key(self, node: NodeSnapshot) -> str | None:
        """The plug: its relays share one small web server."""
        params: TasmotaParams = self.params(node)
        return f"tasmota:{params.tasmota_host}:{params.tasmota_port or 80}"

    async def _switch(self, node: NodeSnapshot, on: bool | None) -> bool:
        """``Power<n> On|Off``, or ``Power<n>`` alone to read the relay; the state it answers."""
        import httpx  # loaded when a driver talks, not when its settings are read

        params: TasmotaParams = self.params(node)
        if not params.tasmota_host:
            raise FatalPowerError(f"{node.label} needs its Tasmota host (`wol configure`)")
        relay = params.tasmota_relay
        command = f"Power{relay or ''}" + ("" if on is None else " On" if on else " Off")
        where = f"Tasmota {params.tasmota_host} of {node.label}"
        auth = None
        if params.tasmota_password is not None:
            auth = httpx.BasicAuth("admin", self.reveal(params.tasmota_password))
        url = f"http://{_bracketed(params.tasmota_host)}:{params.tasmota_port or 80}/cm"
        response = await request(self._client, "GET", url, where=where, params={"cmnd": command}, auth=auth)
        body = json_object(response, where)
        if "WARNING" in body:
            raise FatalPowerError(f"{where} refused the request: {body['WARNING']} (check the web password)")
        if body.get("Command") in ("Unknown", "Error"):
            raise FatalPowerError(f"{where} has no relay {relay or 1} ({command!r}: {body['Command']})")
        value = body.get(f"POWER{relay}") if relay else None
        value = value if value is not None else body.get("POWER", body.get("POWER1"))
        if value not in ("ON", "OFF"):
            raise FatalPowerError(f"{where} answered without the relay's state: {body}")
        return bool(value == "ON")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
