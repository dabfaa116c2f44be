"""What the HTTP power drivers share (webhook, Shelly, Tasmota): one request with mko's error mapping.

A timeout, a refused connection, 429 and 5xx are retryable; a certificate that does not verify, 401/403,
404 and any other 4xx are fatal (asking again cannot help). Messages name the device, never a secret.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from mko.platform.errors import FatalPowerError, RetryablePowerError
from mko.power.base import PowerDriver

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpDeviceDriver", "is_certificate_error", "request", "tls_verify"]

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


class HttpDeviceDriver(PowerDriver):
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
