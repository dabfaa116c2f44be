"""The Proxmox VE API client the Proxmox drivers share (VMs and containers: ``proxmox``; the hypervisor
itself: ``proxmox_host``): a proxmoxer session per API endpoint, with a CA file or a pinned certificate
fingerprint, and every blocking call run in a worker thread with its failure translated into mko's
errors (401 and 403, a certificate that does not verify: fatal; a timeout, a refused connection, a locked
guest or a lost quorum: retryable).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar, cast

from mko.platform.errors import FatalPowerError, PowerError, RetryablePowerError
from mko.power.base import ProxmoxEndpoint

__all__ = ["call", "check_endpoint", "close", "connect"]

T = TypeVar("T")
# PVE answers most handler errors with HTTP 500; these texts mean "try again shortly".
_TRANSIENT = ("locked", "quorum", "got timeout", "try again", "temporarily")
_RETRYABLE_STATUS = {408, 429, 502, 503, 504, 595, 596}


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
    login: dict[str, Any] = {"user": endpoint.username, "password": secret}
    if endpoint.token_id:
        user, _, token_name = endpoint.token_id.partition("!")
        login = {"user": user, "token_name": token_name, "token_value": secret}
    api = ProxmoxAPI(endpoint.host, port=endpoint.port, verify_ssl=verify, timeout=timeout, **login)
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


async def call(endpoint: ProxmoxEndpoint, fn: Callable[[], T]) -> T:
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
    api = await call(endpoint, lambda: connect(endpoint, secret, timeout))
    try:
        version = await call(endpoint, api.version.get)
        guests = await call(endpoint, lambda: api.cluster.resources.get(type="vm"))
        nodes = await call(endpoint, api.nodes.get)
    finally:
        close(api)
    return {
        "ok": True,
        "version": version.get("version"),
        "release": version.get("release"),
        "nodes": sorted(str(n.get("node")) for n in nodes),
        "guests": len(guests),
    }


def close(api: Any) -> None:
    """Close a client's pooled connections (a host that went away took them with it)."""
    with contextlib.suppress(Exception):  # closing a dead session must not hide what the caller reports
        api._store["session"].close()
