"""The lab's ``shutdown``: ``shutdown -h now`` (or ``-r``) asks the lab to power the node off (or reboot).

Options and the "invalid option" message copy systemd 252's ``shutdown`` (Debian 12); only immediate
shutdowns (``now``, ``+0``) are simulated. The lab carries the request out once the command returned.
"""

from __future__ import annotations

from .standin import Context, fail


def run(ctx: Context, argv: list[str]) -> int:
    """``shutdown [-h|-P|-H|-r] now``."""
    action = "off"
    when = "+1"  # shutdown's default
    for arg in argv:
        if arg in ("-h", "-P", "--poweroff", "-H", "--halt"):
            action = "off"
        elif arg in ("-r", "--reboot"):
            action = "reboot"
        elif arg.startswith("-"):
            fail(f"shutdown: invalid option -- '{arg.lstrip('-')}'", 1)
        else:
            when = arg
    if when not in ("now", "+0"):
        fail("mko lab shutdown stand-in: only immediate shutdowns (now, +0) are simulated", 64)
    ctx.request_power(action)
    return 0
