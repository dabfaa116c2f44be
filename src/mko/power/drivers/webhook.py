"""Webhooks: power a node by calling URLs of another system (a home-automation hub, a PDU's REST API,
a MAAS-style power service), and read its state from a status URL whose answer matches a regex.

On and off are one HTTP request each (``POST`` by default, with optional headers and body); the status
URL is read with ``GET`` and its body searched with the on regex, then the off regex (MAAS's defaults:
``status.*:.*running`` / ``status.*:.*stopped``); neither matching reads as unknown. Without a status URL
"on" is verified by a TCP probe of the node, like a magic packet. A secret header (an API key, or
``Authorization: Bearer …``) is stored encrypted and bound to the URLs and TLS settings it is sent to.
TLS is verified by default, with an optional CA file.

Example, a Home Assistant switch through its REST API::

    mko wol configure 12 --method webhook \\
      --webhook-on-url https://ha.lan:8123/api/services/switch/turn_on \\
      --webhook-off-url https://ha.lan:8123/api/services/switch/turn_off \\
      --webhook-body '{"entity_id": "switch.nas"}' --webhook-content-type application/json \\
      --webhook-status-url https://ha.lan:8123/api/states/switch.nas \\
      --webhook-on-regex '"state": *"on"' --webhook-off-regex '"state": *"off"' \\
      --webhook-secret-header Authorization --webhook-secret ?      # "Bearer <long-lived token>"
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from mko.platform.errors import FatalPowerError, InputError
from mko.platform.validation import check_text, quoted
from mko.power.base import Capability, NodeSnapshot
from mko.power.fields import http_url, validate_ca_file, validate_regex, validate_secret
from mko.power.http import SwitchDriver, request, tls_verify
from mko.power.params import DriverParams, StoredSecret, param, secret
from mko.power.probe import probe_tcp

if TYPE_CHECKING:
    import httpx

__all__ = ["WebhookDriver", "WebhookParams"]

ON_REGEX = r"status.*:.*running"
OFF_REGEX = r"status.*:.*stopped"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")  # an HTTP header name (RFC 9110 token)


def validate_url(value: str, field: str) -> str:
    """An http(s) URL without credentials (they belong in the secret header)."""
    return http_url(
        value,
        field,
        example="https://hub.lan/api/on",
        credentials="put credentials in the secret header (--webhook-secret), not in the URL",
    )


def _method(value: str, field: str) -> str:
    method = check_text(value, field, max_length=10).strip().upper()
    if method not in _METHODS:
        raise InputError(field, f"{quoted(value)} is not one of {', '.join(_METHODS)}")
    return method


def _header_name(value: str, field: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise InputError(field, f"{quoted(value)} is not an HTTP header name")
    return value


def parse_headers(value: str, field: str = "webhook_headers") -> dict[str, str]:
    """``Name: value; Name2: value2`` as a dict; InputError naming the field for anything else."""
    headers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(";"))):
        name, colon, text = item.partition(":")
        if not colon:
            raise InputError(field, f"{quoted(item)} is not 'Name: value'")
        headers[_header_name(name.strip(), field)] = check_text(text.strip(), field, max_length=1000)
    return headers


def _headers(value: str, field: str) -> str:
    return "; ".join(f"{k}: {v}" for k, v in parse_headers(value, field).items())


def _body(value: str, field: str) -> str:
    return check_text(value, field, max_length=10_000)


def _content_type(value: str, field: str) -> str:
    text = check_text(value, field, max_length=200).strip()
    if not re.fullmatch(r"[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=[\w.+\"-]+)*", text):
        raise InputError(field, f"{quoted(value)} is not a media type such as application/json")
    return text


class WebhookParams(DriverParams):
    """The URLs that switch the node and the one that tells its state."""

    webhook_on_url: str | None = param(help="webhook: URL that powers the node on", check=validate_url)
    webhook_off_url: str | None = param(help="webhook: URL that powers the node off", check=validate_url)
    webhook_status_url: str | None = param(
        help="webhook: URL read (GET) for the node's state", check=validate_url
    )
    webhook_method: str | None = param(
        help="webhook: HTTP method of the on/off requests (POST)", check=_method
    )
    webhook_headers: str | None = param(
        help="webhook: extra headers, 'Name: value; Name2: value2'", check=_headers
    )
    webhook_body: str | None = param(help="webhook: body of the on/off requests", check=_body)
    webhook_content_type: str | None = param(help="webhook: Content-Type of the body", check=_content_type)
    webhook_on_regex: str | None = param(
        help=f"webhook: regex of a status body meaning on ({ON_REGEX})", check=validate_regex
    )
    webhook_off_regex: str | None = param(
        help=f"webhook: regex of a status body meaning off ({OFF_REGEX})", check=validate_regex
    )
    webhook_verify_tls: bool = param(True, help="webhook: verify the server's TLS certificate")
    webhook_ca_file: str | None = param(
        help="webhook: CA file for the server's certificate", check=validate_ca_file
    )
    webhook_secret_header: str | None = param(
        help="webhook: name of the secret header, e.g. X-Api-Key", check=_header_name
    )
    webhook_secret: StoredSecret = secret(
        help="webhook: value of the secret header",
        check=validate_secret,
        binds=(
            "webhook_on_url",
            "webhook_off_url",
            "webhook_status_url",
            "webhook_secret_header",
            "webhook_verify_tls",
            "webhook_ca_file",
        ),
    )

    required: ClassVar[tuple[str, ...]] = ("webhook_on_url",)

    def needed(self) -> tuple[str, ...]:
        """The secret header's name and its value go together: one alone is never sent."""
        if self.webhook_secret is not None or self.webhook_secret_header:
            return ("webhook_secret_header", "webhook_secret")
        return ()


class WebhookDriver(SwitchDriver):
    """Calls the node's on/off URLs and reads its status URL."""

    name: ClassVar[str] = "webhook"
    label: ClassVar[str] = "webhook"
    Params: ClassVar[type[DriverParams]] = WebhookParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "any"
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True

    def __init__(self, timeout: float = 10.0, probe_timeout: float = 1.0) -> None:
        self._timeout = timeout
        self._probe_timeout = probe_timeout
        self._clients: dict[int, httpx.AsyncClient] = {}

    @classmethod
    def create(cls, settings: Any) -> WebhookDriver:
        """A driver with the settings' API and probe timeouts."""
        return cls(settings.power_api_timeout, settings.probe_timeout)

    def _client(self, node: NodeSnapshot) -> httpx.AsyncClient:
        import httpx  # loaded when a driver talks, not when its settings are read

        if node.node_id not in self._clients:
            params: WebhookParams = self.params(node)
            headers = {"Accept": "application/json, text/plain, */*", "User-Agent": "mko power webhook"}
            headers |= parse_headers(params.webhook_headers or "")
            if params.webhook_secret_header and params.webhook_secret is not None:
                headers[params.webhook_secret_header] = self.reveal(params.webhook_secret)
            verify = tls_verify(params.webhook_verify_tls, params.webhook_ca_file, f"webhook of {node.label}")
            self._clients[node.node_id] = httpx.AsyncClient(
                timeout=self._timeout, verify=verify, headers=headers, follow_redirects=True
            )
        return self._clients[node.node_id]

    async def _send(self, node: NodeSnapshot, url: str | None, what: str) -> None:
        params: WebhookParams = self.params(node)
        if not url:
            raise FatalPowerError(f"{node.label} has no webhook {what} URL (`wol configure`)")
        headers = {"Content-Type": params.webhook_content_type} if params.webhook_content_type else {}
        where = f"webhook {what} of {node.label} ({_origin(url)})"
        await request(
            self._client(node),
            params.webhook_method or "POST",
            url,
            where=where,
            content=(params.webhook_body or "").encode() or None,
            headers=headers,
            ca_hint="; give its CA file (--webhook-ca-file)",
        )

    async def _switch(self, node: NodeSnapshot, on: bool | None) -> bool | None:
        """Call the on or off URL; or read the status URL, whose body the regexes match (neither: not
        known), and without one probe the node over TCP."""
        params: WebhookParams = self.params(node)
        if on is not None:
            await self._send(
                node, params.webhook_on_url if on else params.webhook_off_url, "on" if on else "off"
            )
            return on
        if not params.webhook_status_url:
            return (await probe_tcp(node.ip_address, node.probe_port, self._probe_timeout)).ok
        where = f"webhook status of {node.label} ({_origin(params.webhook_status_url)})"
        body = (await request(self._client(node), "GET", params.webhook_status_url, where=where)).text
        if re.search(params.webhook_on_regex or ON_REGEX, body):
            return True
        if re.search(params.webhook_off_regex or OFF_REGEX, body):
            return False
        return None

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _origin(url: str) -> str:
    """scheme://host:port of a URL, for messages (its path or query may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
