"""The lab's ``microk8s``: ``kubectl`` (:mod:`.kubectl`), ``start``, ``stop``, ``status`` and ``dbctl
backup`` over the cluster every node shares (:mod:`.cluster_state`).

What it simulates, and how tests shape it, is described in mko.lab.microk8s. Versions modelled:
MicroK8s 1.29 snap (``status.py``, ``dbctl.py`` of the k8s-dqlite migrator era, the stop/start
wrappers, which refuse on a node joined with ``--worker``); kubectl's in :mod:`.kubectl`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime

from .cluster_state import (
    CLUSTERED,
    Cluster,
    config,
    delay,
    is_ready,
    known_nodes,
    node_of,
    quorum,
    start_services,
    worker_only,
)
from .kubectl import kubectl
from .standin import Context, fail

# ----------------------------------------------------------------------------- microk8s start/stop/status


# snapd runs one change per snap at a time (overlord/snapstate/conflict.go): a `microk8s start` while a
# `microk8s stop` still runs (or the other way round) is refused with this, exit 1.
_CONFLICT = 'error: error running snapctl: snap "microk8s" has "service-control" change in progress'


def _wrapper_pause(ctx: Context, verb: str) -> float | None:
    # The seconds `microk8s VERB` takes here, or None on a node joined with --worker, where the real
    # wrapper only prints this notice and exits 0. The node is busy with the change until it ends (the
    # deadline, not a flag, so a stand-in killed by a power cut leaves nothing stuck).
    with Cluster(ctx.lab) as state:
        if worker_only(state, ctx.host):
            print(CLUSTERED)
            print(f"Use 'snap {verb} microk8s' to {verb} services on this node.")
            return None
        node = node_of(state, ctx.host)
        now = time.time()
        if float(node.get("change_until") or 0) > now:
            fail(_CONFLICT, 1)
        pause = delay(state, verb, ctx.host)
        node["change_until"] = now + pause
        return pause


def start(ctx: Context) -> None:
    """``microk8s start``: enable and start the services; Ready ``ready_delay`` seconds later."""
    pause = _wrapper_pause(ctx, "start")
    if pause is None:
        return
    time.sleep(pause)
    now = time.time()
    with Cluster(ctx.lab) as state:
        node = node_of(state, ctx.host)
        node["enabled"] = True
        start_services(state, node, now)


def stop(ctx: Context) -> None:
    """``microk8s stop``: stop and disable the services (they stay down after a reboot)."""
    pause = _wrapper_pause(ctx, "stop")
    if pause is None:
        return
    time.sleep(pause)
    with Cluster(ctx.lab) as state:
        node = node_of(state, ctx.host)
        node.update(enabled=False, running=False, ready_at=None, changed_at=time.time())
    print("Stopped.")


_ADDONS = (
    "addons:\n  enabled:\n    dns                  # (core) CoreDNS\n"
    "    ha-cluster           # (core) Configure high availability on the current node\n"
    "    helm                 # (core) Helm - the package manager for Kubernetes\n"
    "    helm3                # (core) Helm 3 - the package manager for Kubernetes\n"
    "  disabled:\n    dashboard            # (core) The Kubernetes dashboard\n"
    "    hostpath-storage     # (core) Storage class; allocates storage from host directory"
)


def _status_options(rest: list[str]) -> tuple[bool, float | None]:
    wait = False
    timeout: float | None = None
    items = list(rest)
    while items:
        item = items.pop(0)
        if item in ("-w", "--wait-ready"):
            wait = True
        elif item in ("-t", "--timeout"):
            timeout = float(items.pop(0)) if items else 0
        elif item.startswith("--timeout="):
            timeout = float(item.split("=", 1)[1])
        elif item == "--format":
            if (items.pop(0) if items else "") != "pretty":
                fail("mko lab microk8s stand-in: only --format pretty is simulated", 64)
        elif item.startswith("-"):
            fail(
                "Usage: microk8s status [OPTIONS]\nTry 'microk8s status -h' for help.\n\n"
                f"Error: No such option: {item}",
                2,
            )
    return wait, timeout


def status(ctx: Context, rest: list[str]) -> None:
    """MicroK8s 1.29 status.py: the answer is on stdout and the exit code is 0 even when MicroK8s is not
    running or --wait-ready timed out (canonical/microk8s #3974, #3927): read the first line."""
    wait, timeout = _status_options(rest)
    with Cluster(ctx.lab) as state:
        if worker_only(state, ctx.host):
            print(CLUSTERED + " Please use the microk8s status on the master.")
            return
        if not node_of(state, ctx.host)["enabled"] and not node_of(state, ctx.host)["running"]:
            print("microk8s is not running, try microk8s start")
            return
    # NOTE: the real --wait-ready waits forever without --timeout; the stand-in gives up after 60 s.
    deadline = time.time() + (timeout if timeout else (60 if wait else 0))
    while True:
        now = time.time()
        with Cluster(ctx.lab) as state:
            ready = (
                is_ready(state, ctx.host, now)
                and quorum(state)
                and ctx.host not in config(state).get("crashloop", [])
            )
            voters = list(config(state).get("control_planes", []))[:3]
            up = [v for v in voters if node_of(state, v)["running"]]
        if ready or not wait or now >= deadline:
            break
        time.sleep(0.05)
    if not ready:
        print("microk8s is not running. Use microk8s inspect for a deeper inspection.")
        return
    masters = " ".join(f"{ctx.resolve(v)}:19001" for v in up) or "127.0.0.1:19001"
    print("microk8s is running")
    print(f"high-availability: {'yes' if len(up) >= 3 else 'no'}")
    print(f"  datastore master nodes: {masters}")
    print("  datastore standby nodes: none")
    print(_ADDONS)


# ----------------------------------------------------------------------------- microk8s dbctl

_DBCTL_USAGE = "usage: dbctl [-h] [--debug] {restore,backup} ..."
_KINE = "unix:///var/snap/microk8s/current/var/kubernetes/backend/kine.sock:12379"


def dbctl(ctx: Context, rest: list[str]) -> int:
    """MicroK8s 1.29 dbctl.py (k8s-dqlite migrator era): ``dbctl [--debug] backup [-o FILE]``.

    Needs the datastore running here (kine.sock): else exit 10. Writes FILE.tar.gz holding FILE/N.key
    + N.data. Lab failure modes (config "backup"): fail (migrator error, exit 1), empty
    (canonical/microk8s #4308: exit 0, an archive with no keys), delay (seconds it takes; a hang is a
    long delay).
    """
    items = [a for a in rest if a != "--debug"]
    if not items:
        print(_DBCTL_USAGE)
        return 0
    if items[0] != "backup":
        fail("mko lab microk8s stand-in: only `dbctl backup` is simulated", 64)
    out = None
    if items[1:2] == ["-o"] and len(items) == 3:
        out = items[2]
    elif len(items) != 1:
        fail(f"{_DBCTL_USAGE}\ndbctl: error: unrecognized arguments: {' '.join(items[1:])}", 2)
    with Cluster(ctx.lab) as state:
        me = node_of(state, ctx.host)
        cfg = config(state)
        # NOTE: leaving by SystemExit inside the block writes nothing back: the real tool changes nothing.
        if worker_only(state, ctx.host):
            print(CLUSTERED)
            raise SystemExit(1)
        dqlite = ctx.host in cfg.get("control_planes", [])
        if not (me["running"] and dqlite):
            print("Please ensure the kubernetes apiserver is running and HA is enabled.")
            raise SystemExit(10)
        mode = dict(cfg.get("backup") or {})
        keys = ["/registry/minions/" + n for n in known_nodes(state)]
        keys += [
            f"/registry/{w['kind'].lower() + 's'}/{w['ns']}/{w['name']}" for w in cfg.get("workloads", [])
        ]
        keys += [
            "/registry/namespaces/default",
            "/registry/namespaces/kube-system",
            "/registry/services/specs/default/kubernetes",
        ]
        healthy = quorum(state)
    name = out or "backup-" + datetime.now().strftime("%Y-%m-%d-%H-%M-%S")  # the node's local time
    name = name.removesuffix(".tar.gz")
    print("Backing up the datastore")
    sys.stdout.flush()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    base = os.path.basename(name)
    sys.stderr.write(
        f'time="{stamp}" level=info msg="Starting migrator" dir=/tmp/tmpab12cd/{base} endpoint="{_KINE}" '
        "mode=backup-dqlite\n"
    )
    time.sleep(float(mode.get("delay", 0)))
    if mode.get("fail") or not healthy:
        sys.stderr.write(
            f'time="{stamp}" level=fatal msg="Failed to backup dqlite" error="context deadline exceeded"\n'
        )
        print("Backup process failed. 1")
        return 1
    if mode.get("empty"):
        keys = []
    _write_backup(name, base, keys, stamp)
    print(f"The backup is: {name}.tar.gz")
    return 0


def _write_backup(name: str, base: str, keys: list[str], stamp: str) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(base)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
        for index, key in enumerate(keys):
            sys.stderr.write(f'time="{stamp}" level=info msg="Writing key" index={index} key={key} len=64\n')
            for part, data in (("key", key.encode()), ("data", json.dumps({"key": key}).encode())):
                info = tarfile.TarInfo(f"{base}/{index}.{part}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    with open(name + ".tar.gz", "wb") as handle:
        handle.write(buffer.getvalue())


def run(ctx: Context, argv: list[str]) -> int:
    """``microk8s kubectl|start|stop|status|dbctl …``."""
    if argv[:1] == ["kubectl"]:
        kubectl(ctx, argv[1:])
    elif argv == ["start"]:
        start(ctx)
    elif argv == ["stop"]:
        stop(ctx)
    elif argv[:1] == ["status"]:
        status(ctx, argv[1:])
    elif argv[:1] == ["dbctl"]:
        return dbctl(ctx, argv[1:])
    else:
        fail(f"mko lab microk8s stand-in: unsupported arguments: {' '.join(argv)}", 64)
    return 0
