"""Validation and normalisation of user input, written once for the API, CLI and web."""

from __future__ import annotations

import ipaddress
import re

from mko.errors import InputError

__all__ = [
    "normalize_mac",
    "normalize_secureon",
    "validate_broadcast",
    "validate_hostname",
    "validate_interface",
    "validate_ipv4",
    "validate_port",
    "validate_site",
    "validate_ssh_user",
]

_HEX12 = re.compile(r"^[0-9a-f]{12}$")
# Separated forms: aa:bb:cc:dd:ee:ff, aa-bb-..., aabb.ccdd.eeff (Cisco), and no separator at all.
_MAC_FORMS = (
    re.compile(
        r"^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$"
    ),
    re.compile(r"^([0-9a-f]{4})\.([0-9a-f]{4})\.([0-9a-f]{4})$"),
)
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_SSH_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_SITE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62})$")


def _mac_digits(value: str) -> str | None:
    text = value.strip().lower()
    if _HEX12.match(text):
        return text
    for form in _MAC_FORMS:
        match = form.match(text)
        if match:
            return "".join(g for g in match.groups() if g not in (":", "-"))
    return None


def normalize_mac(value: str, field: str = "wol_mac_address") -> str:
    """Return ``aa:bb:cc:dd:ee:ff`` from any common MAC form; reject invalid, multicast, all-zero."""
    digits = _mac_digits(value)
    if digits is None:
        raise InputError(field, f"{value!r} is not a MAC address (expected e.g. aa:bb:cc:dd:ee:ff)")
    if digits == "0" * 12:
        raise InputError(field, "the all-zero MAC address cannot be woken")
    if int(digits[:2], 16) & 0x01:
        raise InputError(field, f"{value!r} is a multicast/broadcast address, not a network card")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def normalize_secureon(value: str, field: str = "wol_secureon") -> str:
    """Return a SecureOn password as lower-case colon hex: 6 bytes (MAC form) or 4 bytes (IPv4 form)."""
    text = value.strip().lower()
    digits = _mac_digits(text)
    if digits is not None:
        return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    if re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){3}", text):
        return text
    try:
        packed = ipaddress.IPv4Address(text).packed
    except ValueError:
        raise InputError(
            field, "a SecureOn password is 6 bytes (aa:bb:cc:dd:ee:ff) or 4 bytes (aa:bb:cc:dd or 1.2.3.4)"
        ) from None
    return ":".join(f"{b:02x}" for b in packed)


def validate_port(value: int, field: str) -> int:
    """A TCP/UDP port: 1–65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InputError(field, f"{value!r} is not a port (1-65535)")
    return value


def validate_ipv4(value: str, field: str = "ip_address") -> str:
    """A unicast IPv4 address in dotted form."""
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise InputError(field, f"{value!r} is not an IPv4 address") from None
    if address.is_multicast or address.is_unspecified or address == ipaddress.IPv4Address("255.255.255.255"):
        raise InputError(field, f"{value!r} is not a host address")
    return str(address)


def validate_broadcast(value: str, field: str = "wol_broadcast_address") -> str:
    """An IPv4 address a magic packet can be sent to: limited/directed broadcast or a unicast host."""
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise InputError(field, f"{value!r} is not an IPv4 address") from None
    if (
        address.is_multicast
        or address.is_unspecified
        or (address.is_loopback and str(address) != "127.255.255.255")
    ):
        raise InputError(field, f"{value!r} cannot carry a magic packet (multicast, 0.0.0.0 or loopback)")
    return str(address)


def validate_hostname(value: str, field: str = "hostname") -> str:
    """An RFC 1123 host name (labels of letters, digits and hyphens)."""
    text = value.strip()
    if not text or len(text) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in text.split(".")):
        raise InputError(field, f"{value!r} is not a valid host name")
    return text


def validate_ssh_user(value: str, field: str = "ssh_user") -> str:
    """A POSIX user name: no spaces, quotes or shell metacharacters."""
    if not _SSH_USER.match(value):
        raise InputError(field, f"{value!r} is not a valid user name")
    return value


def validate_interface(value: str, field: str = "wol_interface") -> str:
    """A Linux network interface name (at most 15 characters, no slashes or spaces)."""
    if not _INTERFACE.match(value) or value in (".", ".."):
        raise InputError(field, f"{value!r} is not a network interface name")
    return value


def validate_site(value: str, field: str = "site") -> str | None:
    """A wake-agent site name (letters, digits, . _ -; at most 64), lower-cased; blank means none."""
    text = value.strip().lower()
    if not text:
        return None
    if not _SITE.match(text):
        raise InputError(field, f"{value!r} is not a site name (letters, digits, . _ -; at most 64)")
    return text
