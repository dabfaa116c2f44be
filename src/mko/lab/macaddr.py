"""MAC address helpers for the virtual lab (kept local so the lab depends on nothing else in mko)."""

from __future__ import annotations

import re

__all__ = ["format_mac", "mac_to_bytes", "normalize_mac"]

_SEPARATORS = re.compile(r"[:.\-]")
_HEX12 = re.compile(r"[0-9a-f]{12}")


def mac_to_bytes(mac: str) -> bytes:
    """Return the 6 bytes of a MAC written as aa:bb:cc:dd:ee:ff, aa-bb-…, aabb.ccdd.eeff or aabbccddeeff."""
    digits = _SEPARATORS.sub("", mac.strip().lower())
    if not _HEX12.fullmatch(digits):
        raise ValueError(f"{mac!r} is not a MAC address")
    return bytes.fromhex(digits)


def format_mac(raw: bytes) -> str:
    """Return bytes as lower-case colon hex (also used for 4-byte SecureOn passwords)."""
    # bytes.hex() runs in C: the recorder formats three MACs per frame, at tens of thousands of frames/s.
    return raw.hex(":")


def normalize_mac(mac: str) -> str:
    """Return a MAC in the lab's canonical form, lower-case aa:bb:cc:dd:ee:ff."""
    return format_mac(mac_to_bytes(mac))
