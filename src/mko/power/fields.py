"""Checks of the power-driver settings people type: BMC addresses, URLs, Proxmox users and tokens,
numbers in a range, choices and regular expressions.

Each returns the normalised value or raises InputError naming the field, like ``mko.platform.validation``.
Drivers name them as the ``check`` of their settings' fields (:mod:`mko.power.params`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mko.platform.errors import InputError
from mko.platform.validation import PATH_MAX, check_text, quoted, text_problem, validate_hostname
from mko.power.params import DriverParams, StoredSecret, param, secret

__all__ = [
    "BmcLogin",
    "choice",
    "http_url",
    "integer_range",
    "normalize_fingerprint",
    "validate_ca_file",
    "validate_host",
    "validate_name",
    "validate_pve_user",
    "validate_redfish_url",
    "validate_regex",
    "validate_secret",
    "validate_token_id",
]

Check = Callable[[Any, str], Any]

_PVE_USER = re.compile(r"[^\s@!:]{1,64}@[A-Za-z][A-Za-z0-9._-]{0,31}")
_TOKEN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_BMC_CREDENTIALS = "put the user and password in their own fields, not in the URL"


def validate_host(value: str, field: str) -> str:
    """A host name or an IPv4/IPv6 address."""
    text = check_text(value, field, max_length=300).strip(" ")
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return validate_hostname(text, field)


def http_url(value: str, field: str, *, example: str, credentials: str) -> str:
    """An http(s) URL without credentials: ``credentials`` is the message that says where they go
    instead, ``example`` the URL offered for a value that is no http(s) URL."""
    text = check_text(value, field, max_length=2000).strip(" ")
    if any(c.isspace() for c in text):
        raise InputError(field, f"{quoted(value)} is not a URL (it holds white space)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InputError(field, f"{quoted(value)} is not a valid URL ({exc})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InputError(field, f"{quoted(value)} is not an http(s) URL such as {example}")
    if parts.username or parts.password:
        raise InputError(field, credentials)
    validate_host(parts.hostname, field)
    if port == 0:
        raise InputError(field, "port 0 is not a valid port")
    return text


def validate_redfish_url(value: str, field: str = "redfish_url") -> str:
    """An http(s) URL of a Redfish service, without credentials, query or fragment."""
    text = http_url(value, field, example="https://10.0.0.5", credentials=_BMC_CREDENTIALS)
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise InputError(field, "the URL takes no query or fragment")
    return text.rstrip("/")


def validate_pve_user(value: str, field: str = "username") -> str:
    """A Proxmox user: ``user@realm`` (e.g. ``root@pam``, ``mko@pve``)."""
    text = check_text(value, field, max_length=200).strip(" ")
    if not _PVE_USER.fullmatch(text):
        raise InputError(
            field, f"{quoted(value)} is not a Proxmox user of the form user@realm (e.g. root@pam)"
        )
    return text


def validate_token_id(value: str, field: str = "token_id") -> str:
    """A Proxmox API token id: ``user@realm!tokenname``."""
    text = check_text(value, field, max_length=200).strip(" ")
    user, bang, name = text.partition("!")
    if not bang or not _TOKEN_NAME.fullmatch(name) or not _PVE_USER.fullmatch(user):
        raise InputError(field, f"{quoted(value)} is not a Proxmox token id of the form user@realm!tokenname")
    return text


def normalize_fingerprint(value: str, field: str = "fingerprint") -> str:
    """A SHA-256 certificate fingerprint as ``AB:CD:…`` (32 bytes; colons optional on input)."""
    digits = re.sub(r"[ :]", "", check_text(value, field, max_length=200)).upper()
    if not re.fullmatch(r"[0-9A-F]{64}", digits):
        raise InputError(field, "expected a SHA-256 fingerprint: 32 hex bytes, e.g. AB:CD:…")
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def validate_ca_file(value: str, field: str = "ca_file") -> str:
    """A readable PEM file on this machine, as an absolute path."""
    path = Path(check_text(value, field, max_length=PATH_MAX)).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise InputError(field, f"{quoted(value)} is not a readable file on this machine")
    return str(path.resolve())


def validate_name(value: str, field: str) -> str:
    """A short identifier: letters, digits, dots, dashes, underscores (Proxmox node, Redfish system)."""
    text = check_text(value, field, max_length=200).strip(" ")
    if not _NAME.fullmatch(text):
        raise InputError(field, f"{quoted(value)} must be letters, digits, '.', '-' or '_' (at most 100)")
    return text


def validate_secret(value: str, field: str) -> str:
    """A password or token secret: not empty, one line."""
    if not value or not value.strip():
        raise InputError(field, "must not be empty")
    if len(value) > 512 or text_problem(value, template_ok=True):
        raise InputError(field, "must be one line of at most 512 printable characters")
    return value


def validate_bmc_user(value: str, field: str = "bmc_username") -> str:
    """A BMC user name: not empty, no spaces or control characters."""
    text = check_text(value, field, max_length=200).strip(" ")
    if not text or len(text) > 100 or any(c.isspace() for c in text):
        raise InputError(field, f"{quoted(value)} is not a valid user name")
    return text


def integer_range(low: int, high: int, what: str | None = None, *, unit: str = "") -> Check:
    """The check of a whole number from ``low`` to ``high``: "7 is not <what> (1-4)", or without
    ``what`` "7 is out of range (1-4 <unit>)"."""
    span = f"{low}-{high}" + (f" {unit}" if unit else "")
    problem = f"is not {what}" if what else "is out of range"

    def check(value: int, field: str) -> int:
        if isinstance(value, bool) or not low <= value <= high:
            raise InputError(field, f"{value!r} {problem} ({span})")
        return value

    return check


def choice(options: tuple[str, ...]) -> Check:
    """The check of a setting that is one of ``options`` (case and surrounding spaces ignored)."""

    def check(value: str, field: str) -> str:
        text = check_text(value, field, max_length=20).strip().lower()
        if text not in options:
            raise InputError(field, f"{value!r} is not one of {', '.join(options)}")
        return text

    return check


def validate_regex(value: str, field: str) -> str:
    """A regular expression (Python's syntax) of at most 200 characters."""
    text = check_text(value, field, max_length=200)
    try:
        re.compile(text)
    except re.error as exc:
        raise InputError(field, f"{quoted(value)} is not a regular expression ({exc})") from None
    return text


class BmcLogin(DriverParams):
    """The BMC login IPMI and Redfish share: switching between them keeps the credentials."""

    bmc_username: str | None = param(help="IPMI/Redfish: BMC user", check=validate_bmc_user)
    bmc_password: StoredSecret = secret(
        help="IPMI/Redfish: BMC password",
        check=validate_secret,
        # Each driver binds the fields of these it has: IPMI the address, Redfish the URL and its TLS.
        binds=("bmc_address", "bmc_port", "redfish_url", "bmc_verify_tls", "bmc_ca_file"),
    )
