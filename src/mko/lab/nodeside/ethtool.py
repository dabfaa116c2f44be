"""The lab's ``ethtool``: show a card's settings with its Wake-on lines, and ``-s IFACE wol MODES``.

A veth has no Wake-on at all (``ethtool`` prints no Wake-on lines and ``-s … wol g`` fails with 75),
so the node's cards live in ``nic.json``: per interface the modes it supports, its current Wake-on and
the driver's default at boot. Output, messages and exit codes copy ethtool 6.1 (Debian 12) on an Intel
e1000e card; without root the Wake-on lines are missing and netlink says "Operation not permitted".
"""

from __future__ import annotations

import os
import sys

from .standin import Context, fail

TYPE_CHECKING = False  # see standin: no typing import at run time
if TYPE_CHECKING:
    from typing import Any

WOL_LETTERS = "pumbagsd"

_SETTINGS = [
    "\tSupported ports: [ TP ]",
    "\tSupported link modes:   10baseT/Half 10baseT/Full",
    "\t                        100baseT/Half 100baseT/Full",
    "\t                        1000baseT/Full",
    "\tSupported pause frame use: Symmetric",
    "\tSupports auto-negotiation: Yes",
    "\tSupported FEC modes: Not reported",
    "\tAdvertised link modes:  10baseT/Half 10baseT/Full",
    "\t                        100baseT/Half 100baseT/Full",
    "\t                        1000baseT/Full",
    "\tAdvertised pause frame use: Symmetric",
    "\tAdvertised auto-negotiation: Yes",
    "\tAdvertised FEC modes: Not reported",
    "\tSpeed: 1000Mb/s",
    "\tDuplex: Full",
    "\tAuto-negotiation: on",
    "\tPort: Twisted Pair",
    "\tPHYAD: 1",
    "\tTransceiver: internal",
    "\tMDI-X: on (auto)",
]
_TAIL = ["\tCurrent message level: 0x00000007 (7)", "\t\t\t       drv probe link", "\tLink detected: yes"]


def _device(nics: dict[str, Any], name: str) -> dict[str, str]:
    if not os.path.exists(os.path.join("/sys/class/net", name)):
        fail("netlink error: no device matches name (No such device)", 1)
    nic: dict[str, str] = nics.setdefault(name, {"supports": "", "wake_on": "d", "default": "d"})
    return nic


def _show(nics: dict[str, Any], name: str) -> None:
    nic = _device(nics, name)
    out = [f"Settings for {name}:", *_SETTINGS]
    if nic["supports"]:
        if os.geteuid() != 0:
            sys.stderr.write("netlink error: Operation not permitted\n")
        else:
            out += [f"\tSupports Wake-on: {nic['supports']}", f"\tWake-on: {nic['wake_on']}"]
    out += _TAIL
    print("\n".join(out))


def _set_wol(ctx: Context, nics: dict[str, Any], name: str, modes: str) -> None:
    nic = _device(nics, name)
    if os.geteuid() != 0:
        fail("netlink error: Operation not permitted", 1)
    if not modes or any(c not in WOL_LETTERS for c in modes):
        fail("ethtool: bad command line argument(s)\nFor more information run ethtool -h", 1)
    if not nic["supports"]:
        fail("netlink error: Operation not supported", 75)
    wanted = "" if modes == "d" else modes.replace("d", "")
    if any(c not in nic["supports"] for c in wanted):
        fail(
            "netlink error: cannot enable unsupported WoL mode (offset 36)\nnetlink error: Invalid argument",
            1,
        )
    nic["wake_on"] = "".join(c for c in WOL_LETTERS if c in wanted) or "d"
    ctx.save("nic.json", nics)


def run(ctx: Context, argv: list[str]) -> int:
    """``ethtool IFACE`` or ``ethtool -s|--change IFACE wol MODES``."""
    nics: dict[str, Any] = ctx.load("nic.json", {})
    if len(argv) == 1 and not argv[0].startswith("-"):
        _show(nics, argv[0])
    elif len(argv) == 4 and argv[0] in ("-s", "--change") and argv[2] == "wol":
        _set_wol(ctx, nics, argv[1], argv[3])
    else:
        fail(f"mko lab ethtool stand-in: unsupported arguments: {' '.join(argv)}", 64)
    return 0
