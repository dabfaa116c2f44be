"""The lab's ``snap``: ``snap start|stop microk8s [--enable|--disable]``, what works on a worker node.

On a node joined with ``--worker`` the ``microk8s start``/``stop`` wrappers only print a notice; the
snap's own service commands start and stop the services there. Output copies snapd 2.57 (Debian 12)
(``Started.``, ``Stopped.``).
"""

from __future__ import annotations

import time

from .cluster_state import Cluster, node_of, start_services
from .standin import Context, fail


def run(ctx: Context, argv: list[str]) -> int:
    """``snap start|stop [--enable|--disable] microk8s``."""
    verb = argv[0] if argv else ""
    names = [a for a in argv[1:] if not a.startswith("-")]
    flags = [a for a in argv[1:] if a.startswith("-")]
    if (
        verb not in ("start", "stop")
        or names != ["microk8s"]
        or any(f not in ("--enable", "--disable") for f in flags)
    ):
        fail(f"mko lab snap stand-in: unsupported arguments: {' '.join(argv)}", 64)
    with Cluster(ctx.lab) as state:
        node = node_of(state, ctx.host)
        now = time.time()
        if verb == "start":
            node["enabled"] = node["enabled"] or "--enable" in flags
            start_services(state, node, now)
        else:
            node["enabled"] = node["enabled"] and "--disable" not in flags
            node["running"], node["ready_at"], node["changed_at"] = False, None, now
    print("Started." if verb == "start" else "Stopped.")
    return 0
