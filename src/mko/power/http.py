"""What the HTTP power drivers share (webhook, Shelly, Tasmota): one request with mko's error mapping,
a JSON answer read as an object, and the switch they all are (on, off, and its reading as a state).

A timeout, a refused connection, 429 and 5xx are retryable; a certificate that does not verify, 401/403,
404 and any other 4xx are fatal (asking again cannot help). Messages name the device, never a secret.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from mko.platform.errors import FatalPowerError, RetryablePowerError
from mko.power.base import Capability, NodeSnapshot, PowerAction, PowerDriver, PowerState

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpDeviceDriver", "SwitchDriver", "is_certificate_error", "json_object", "request", "tls_verify"]

_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


def is_certificate_error(exc: BaseException) -> bool:
    """Whether an httpx transport error is a failed TLS certificate check."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tls_verify(verify: bool, ca_file: str | None, where: str) -> ssl.SSLContext | bool:
    """httpx's ``verify``: the CA file's context when one is given, else the flag."""
    if not ca_file:
        return verify
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise FatalPowerError(f"{where}: cannot read CA file {ca_file}: {exc}") from None


async def request(
    client: httpx.AsyncClient, method: str, url: str, *, where: str, ca_hint: str = "", **kwargs: Any
) -> httpx.Response:
    """One request; the response when it is a success, else FatalPowerError or RetryablePowerError."""
    import httpx  # loaded when a driver talks, not when its settings are read

    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise RetryablePowerError(f"{where} did not answer in time") from None
    except httpx.TransportError as exc:
        if is_certificate_error(exc):
            raise FatalPowerError(f"{where}: TLS certificate verification failed{ca_hint}") from None
        raise RetryablePowerError(f"{where} is unreachable: {exc}") from None
    if response.is_success:
        return response
    text = " ".join(response.text.split())[:200] or response.reason_phrase
    if response.status_code in (401, 403):
        raise FatalPowerError(f"{where} refused the credentials (HTTP {response.status_code}: {text})")
    if response.status_code in _RETRYABLE:
        raise RetryablePowerError(f"{where}: HTTP {response.status_code} {text}")
    raise FatalPowerError(f"{where}: HTTP {response.status_code} {text}")


def json_object(response: httpx.Response, where: str) -> dict[str, Any]:
    """The response's JSON object; RetryablePowerError for a body that is not JSON (a device still
    starting its web server), FatalPowerError for JSON that is not an object."""
    try:
        body = response.json()
    except ValueError:
        raise RetryablePowerError(f"{where} answered something that is not JSON") from None
    if not isinstance(body, dict):
        raise FatalPowerError(f"{where} answered {body!r}")
    return body


class SwitchDriver(PowerDriver):
    """A driver whose device is one switch: ``_switch`` turns it on (True) or off (False), or with None
    only reads it, and returns what the device says: True on, False off, None not known. On, hard off
    and the power state are this one mapping; a soft off needs a driver that declares it."""

    async def _switch(self, node: NodeSnapshot, on: bool | None) -> bool | None:
        raise NotImplementedError

    async def _on(self, node: NodeSnapshot) -> None:
        await self._switch(node, True)

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        if soft and Capability.SOFT_OFF not in self.capabilities:
            raise self.unsupported(node, PowerAction.SOFT.value)
        await self._switch(node, False)

    async def query(self, node: NodeSnapshot) -> PowerState:
        """The switch as the device reports it."""
        reading = await self._switch(node, None)
        if reading is None:
            return PowerState.UNKNOWN
        return PowerState.ON if reading else PowerState.OFF


class HttpDeviceDriver(SwitchDriver):
    """Base of the drivers of small HTTP devices (plugs, relays): one client per run, JSON accepted."""

    def __init__(self, timeout: float = 10.0) -> None:
        import httpx  # loaded when a driver talks, not when its settings are read

        self._client = httpx.AsyncClient(timeout=timeout, headers={"Accept": "application/json"})

    @classmethod
    def create(cls, settings: Any) -> PowerDriver:
        """A driver with the settings' API timeout."""
        return cls(settings.power_api_timeout)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()
