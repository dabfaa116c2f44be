"""The lab's ``nmcli``: devices and connection profiles of NetworkManager, kept in ``nm.json``.

``device show IFACE``, ``connection show NAME`` with ``-g``, and ``connection modify NAME
802-3-ethernet.wake-on-lan VALUE``, with ``-t``/``-f``/``-g``. Messages and exit codes copy nmcli 1.42
(Debian 12): 8 when NetworkManager is not running, 10 for an unknown device or profile, 2 for a bad
option or value.
"""

from __future__ import annotations

from .standin import Context, fail

TYPE_CHECKING = False  # see standin: no typing import at run time
if TYPE_CHECKING:
    from typing import Any

_WAKE_ON_LAN = ("802-3-ethernet.wake-on-lan", "ethernet.wake-on-lan")
_WAKE_ON_LAN_VALUES = {
    "default",
    "ignore",
    "none",
    "phy",
    "unicast",
    "multicast",
    "broadcast",
    "arp",
    "magic",
}


def _show_device(nm: dict[str, Any], name: str, fields: list[str] | None, get: list[str] | None) -> None:
    dev = nm["devices"].get(name)
    if dev is None:
        fail(f"Error: Device '{name}' not found.", 10)
    values = {
        "GENERAL.DEVICE": name,
        "GENERAL.STATE": dev["state"],
        "GENERAL.CONNECTION": dev.get("connection") or "",
    }
    for field in get or fields or list(values):
        print(values.get(field, "") if get else f"{field}:{values.get(field, '')}")


def _modify(ctx: Context, nm: dict[str, Any], name: str, prop: str, value: str) -> None:
    con = nm["connections"].get(name)
    if con is None:
        fail(f"Error: unknown connection '{name}'.", 10)
    if prop not in _WAKE_ON_LAN:
        fail(f"mko lab nmcli stand-in: unsupported property {prop}", 64)
    if value not in _WAKE_ON_LAN_VALUES:
        fail(f"Error: failed to modify 802-3-ethernet.wake-on-lan: invalid option '{value}'.", 2)
    con["802-3-ethernet.wake-on-lan"] = value
    ctx.save("nm.json", nm)


def run(ctx: Context, argv: list[str]) -> int:
    """``nmcli [-t] [-f FIELDS] [-g FIELDS] device show … | connection show … | connection modify …``."""
    args = list(argv)
    nm: dict[str, Any] = ctx.load("nm.json", {"running": False, "devices": {}, "connections": {}})
    if not nm["running"]:
        fail("Error: NetworkManager is not running.", 8)
    fields: list[str] | None = None
    get: list[str] | None = None
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-f", "--fields"):
            fields = args.pop(0).split(",")
        elif opt in ("-g", "--get-values"):
            get = args.pop(0).split(",")
        elif opt not in ("-t", "--terse"):  # terse is all the stand-in prints
            fail(f"Error: Option '{opt}' is unknown, try 'nmcli -help'.", 2)
    if args[:2] == ["device", "show"] and len(args) == 3:
        _show_device(nm, args[2], fields, get)
    elif args[:2] == ["connection", "show"] and len(args) == 3 and get:
        con = nm["connections"].get(args[2])
        if con is None:
            fail(f"Error: {args[2]} - no such connection profile.", 10)
        for field in get:
            print(con.get(field, ""))
    elif args[:2] == ["connection", "modify"] and len(args) == 5:
        _modify(ctx, nm, args[2], args[3], args[4])
    else:
        fail(f"mko lab nmcli stand-in: unsupported arguments: {' '.join(argv)}", 64)
    return 0
