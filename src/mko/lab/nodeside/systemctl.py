"""The lab's ``systemctl``: unit state in ``services.json``, unit files from the node's real paths.

``is-active``, ``is-enabled``, ``enable``/``disable`` (``--now``), ``start``/``restart`` (runs the
unit's ``ExecStart=``), ``stop``, ``daemon-reload`` and ``poweroff``/``halt``/``reboot`` (asks the lab
for the power change). Messages and exit codes copy systemd 252 (Debian 12): ``is-active`` exits 3 for
an inactive unit, ``start`` of an unknown unit exits 5, ``enable`` prints the symlink on stderr.
"""

from __future__ import annotations

import os
import sys

from .standin import Context, fail

TYPE_CHECKING = False  # see standin: no typing import at run time
if TYPE_CHECKING:
    from typing import Any

UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
_OPTIONS = ("--quiet", "-q", "--no-pager", "--system")


def _unit_name(name: str) -> str:
    return name if "." in name else name + ".service"


def _unit_file(name: str) -> str | None:
    for directory in UNIT_DIRS:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _exec_start(name: str) -> None:
    path = _unit_file(name)
    if path is None:
        return
    import shlex
    import subprocess

    with open(path) as f:
        for line in f:
            if line.strip().startswith("ExecStart="):
                argv = shlex.split(line.strip()[len("ExecStart=") :].lstrip("-@:+!"))
                subprocess.run(argv, check=False)


def _is_enabled(services: dict[str, Any], units: list[str], quiet: bool) -> int:
    code = 0
    for unit in units:
        if _unit_file(unit) is None:
            sys.stderr.write(f"Failed to get unit file state for {unit}: No such file or directory\n")
            code = 1
            continue
        state = "enabled" if unit in services["enabled"] else "disabled"
        code = code or (0 if state == "enabled" else 1)
        if not quiet:
            print(state)
    return code


def _enable(ctx: Context, services: dict[str, Any], cmd: str, units: list[str], now: bool) -> None:
    for unit in units:
        path = _unit_file(unit)
        if path is None:
            fail(f"Failed to {cmd} unit: Unit file {unit} does not exist.", 1)
        link = "/etc/systemd/system/multi-user.target.wants/" + unit
        if cmd == "enable" and unit not in services["enabled"]:
            services["enabled"].append(unit)
            sys.stderr.write(f"Created symlink {link} \u2192 {path}.\n")
        elif cmd == "disable" and unit in services["enabled"]:
            services["enabled"].remove(unit)
            sys.stderr.write(f'Removed "{link}".\n')
    ctx.save("services.json", services)
    if now and cmd == "enable":
        for unit in units:
            _exec_start(unit)


def _start(services: dict[str, Any], units: list[str]) -> None:
    for unit in units:
        if _unit_file(unit) is None and unit not in services["active"]:
            fail(f"Failed to start {unit}: Unit {unit} not found.", 5)
        _exec_start(unit)


def run(ctx: Context, argv: list[str]) -> int:
    """``systemctl [--quiet] COMMAND [UNIT…]``."""
    args = [a for a in argv if a not in _OPTIONS]
    # NOTE: any of the options above silences the state lines, as --quiet does (mko passes only that).
    quiet = len(args) != len(argv)
    services: dict[str, Any] = ctx.load("services.json", {"active": [], "enabled": []})
    if not args:
        fail("mko lab systemctl stand-in: a command is required", 64)
    cmd, units = args[0], [_unit_name(u) for u in args[1:] if not u.startswith("-")]
    if cmd == "is-active":
        states = ["active" if u in services["active"] else "inactive" for u in units]
        if not quiet:
            print("\n".join(states))
        return 0 if states and all(s == "active" for s in states) else 3
    if cmd == "is-enabled":
        return _is_enabled(services, units, quiet)
    if cmd in ("enable", "disable"):
        _enable(ctx, services, cmd, units, "--now" in argv)
    elif cmd in ("start", "restart"):
        _start(services, units)
    elif cmd == "stop":
        for unit in units:
            if unit in services["active"]:
                services["active"].remove(unit)
        ctx.save("services.json", services)
    elif cmd in ("poweroff", "halt", "reboot"):
        ctx.request_power("reboot" if cmd == "reboot" else "off")
    elif cmd != "daemon-reload":
        fail(f"mko lab systemctl stand-in: unsupported command {cmd!r}", 64)
    return 0
