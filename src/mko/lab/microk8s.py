"""A simulated MicroK8s cluster for lab nodes: ``microk8s``, ``snap`` and ``shutdown`` stand-ins.

Every node of a lab started with ``ssh=True`` gets these commands (see mko.lab.nodesys). They share
one cluster state, ``LAB/microk8s/cluster.json`` (under a lock), so a ``kubectl drain`` run on one node
cordons another, and ``kubectl get nodes`` on a control plane sees every node's power and services::

    {"config": {"control_planes": [...], "workers": [...], "worker_only": [...],
                "ready_delay": 0.3, "delays": {"drain": 0, "stop": {"lab-n2": 3}}, "fail_drain": []},
     "nodes": {"lab-n1": {"powered": true, "enabled": true, "running": true, "ready_at": 1.7e9,
                          "cordoned": false, "boots": 1}}}

What the stand-ins do, as MicroK8s does it (node names are the nodes' hostnames):

* ``microk8s stop`` stops and *disables* the services (they stay down after a reboot); ``microk8s
  start`` enables and starts them, and the node turns Ready ``ready_delay`` seconds later. On a node
  joined with ``--worker`` (listed in ``worker_only``) both only print MicroK8s's "acting as a node in a
  cluster" notice and exit 0 — the real wrappers do exactly that — and ``snap stop microk8s --disable``
  / ``snap start microk8s --enable`` are what work there.
* At boot the services start only if enabled; losing power stops them (``on_boot`` / ``on_halt``).
* ``microk8s kubectl get nodes [-o json]``, ``drain NODE --ignore-daemonsets --delete-emptydir-data
  --timeout=…``, ``cordon`` and ``uncordon`` need the API: the local services running and Ready, and a
  majority of the dqlite voters (the first three control planes) running; otherwise they fail as
  kubectl does. A node powered off or stopped is ``Ready: Unknown``; a drain cordons first.
* ``microk8s status [--wait-ready] [--timeout N]`` reports the local node.
* ``shutdown -h now`` (and ``-r``) asks the lab to power the node off (or reboot it).

Tests shape the cluster with :meth:`Microk8sCluster.configure` / :meth:`~Microk8sCluster.update`:
``delays`` (seconds a ``drain`` of a node, a ``stop`` or a ``start`` takes: one number, or
``{hostname: seconds}``), ``fail_drain`` (nodes whose eviction times out as a PodDisruptionBudget would
make it), ``ready_delay`` (from start to Ready).

Every call lands in the calling node's ``calls.log`` (the stand-in prologue), so tests can merge the
logs of all nodes by time and assert the exact order of commands across the cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mko.lab.nodesys import NodeSystem, StandIn, register_standin

if TYPE_CHECKING:
    from mko.lab.harness import RunningLab

__all__ = ["Microk8sCluster", "configure_microk8s"]

STATE_DIR = "microk8s"

# ----------------------------------------------------------------------------- shared by every stand-in

_COMMON = r"""
import fcntl, socket
CLUSTER_DIR = os.path.join(LAB, "microk8s")
HOST = socket.gethostname()
CLUSTERED = "This MicroK8s deployment is acting as a node in a cluster."
API_DOWN = ("The connection to the server 127.0.0.1:16443 was refused - did you specify the right host"
            " or port?")
NO_QUORUM = ("Error from server (Timeout): the server was unable to return a response in the time"
             " allotted, but may still be processing the request")


def _default_node():
    return {"powered": False, "enabled": True, "running": False, "ready_at": None, "cordoned": False,
            "boots": 0}


class Cluster:
    # The shared state under an exclusive lock; written back when the block ends without an error.
    def __enter__(self):
        os.makedirs(CLUSTER_DIR, exist_ok=True)
        self._lock = open(os.path.join(CLUSTER_DIR, "cluster.lock"), "a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            with open(os.path.join(CLUSTER_DIR, "cluster.json")) as f:
                self.state = json.load(f)
        except FileNotFoundError:
            self.state = {"config": {}, "nodes": {}}
        return self.state

    def __exit__(self, kind, value, tb):
        try:
            if kind is None:
                path = os.path.join(CLUSTER_DIR, "cluster.json")
                tmp = path + ".%d" % os.getpid()
                with open(tmp, "w") as f:
                    json.dump(self.state, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
        finally:
            self._lock.close()
        return False


def node_of(state, name):
    return state["nodes"].setdefault(name, _default_node())


def config(state):
    return state.setdefault("config", {})


def delay(state, what, name=None):
    # Seconds a command takes: one number for every node, or {hostname: seconds}.
    value = config(state).get("delays", {}).get(what, 0)
    if isinstance(value, dict):
        value = value.get(name or HOST, 0)
    return float(value)


def is_ready(state, name, now):
    node = state["nodes"].get(name)
    return bool(node and node["powered"] and node["running"] and node["ready_at"] is not None
                and now >= node["ready_at"])


def known_nodes(state):
    cfg = config(state)
    names = list(cfg.get("control_planes", [])) + list(cfg.get("workers", []))
    return names + sorted(n for n in state["nodes"] if n not in names)


def worker_only(state):
    return HOST in config(state).get("worker_only", [])
"""

# ----------------------------------------------------------------------------- microk8s

_MICROK8S = r"""
import hashlib
from datetime import datetime, timezone

args = sys.argv[1:]


def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(state, now):
    # What kubectl on this node says when the API cannot answer (None when it can).
    me = node_of(state, HOST)
    if not me["running"]:
        if not me["enabled"]:  # `microk8s stop` left its stopped.lock
            return "microk8s is not running, try microk8s start"
        return API_DOWN
    if not is_ready(state, HOST, now):
        return API_DOWN
    voters = list(config(state).get("control_planes", []))[:3]
    if voters and sum(1 for v in voters if node_of(state, v)["running"]) <= len(voters) // 2:
        return NO_QUORUM
    return None


def suffix(name, salt):
    return hashlib.sha256((name + salt).encode()).hexdigest()[:5]


def pods_of(state, name):
    # (namespace/pod, daemonset?) on a node: calico on every node, a workload elsewhere.
    control = name in config(state).get("control_planes", [])
    pods = [("kube-system/calico-node-" + suffix(name, "calico"), True)]
    workload = "kube-system/coredns-7745f9f87f-" if control else "default/web-6d8f7c9b5d-"
    pods.append((workload + suffix(name, "web"), False))
    return pods


def node_item(state, name, now):
    node = state["nodes"].get(name) or _default_node()
    cfg = config(state)
    control = name in cfg.get("control_planes", [])
    created = float(cfg.get("created", now))
    ready = is_ready(state, name, now)
    booting = node["powered"] and node["running"] and not ready
    since = iso(node.get("changed_at") or created)
    if ready:
        status, reason, message = "True", "KubeletReady", "kubelet is posting ready status. AppArmor enabled"
    elif booting:
        status, reason = "False", "KubeletNotReady"
        message = "container runtime status check may not have completed yet"
    else:
        status, reason, message = "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
    pressure = "Unknown" if status == "Unknown" else "False"
    conditions = [
        {"type": kind, "status": pressure, "reason": "KubeletHasSufficient" + word if pressure == "False"
         else "NodeStatusUnknown", "message": ("kubelet has sufficient %s available" % word.lower())
         if pressure == "False" else "Kubelet stopped posting node status.",
         "lastHeartbeatTime": iso(now), "lastTransitionTime": since}
        for kind, word in (("MemoryPressure", "Memory"), ("DiskPressure", "Disk"), ("PIDPressure", "PID"))
    ]
    conditions.append({"type": "Ready", "status": status, "reason": reason, "message": message,
                       "lastHeartbeatTime": iso(now), "lastTransitionTime": since})
    labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "microk8s.io/cluster": "true"}
    if control:
        labels["node.kubernetes.io/microk8s-controlplane"] = "microk8s-controlplane"
    else:
        labels["node.kubernetes.io/microk8s-worker"] = "microk8s-worker"
    spec = {"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.1.0.0/24"]}
    taints = []
    if node["cordoned"]:
        spec["unschedulable"] = True
        taints.append({"effect": "NoSchedule", "key": "node.kubernetes.io/unschedulable",
                       "timeAdded": iso(node.get("cordoned_at") or now)})
    if status == "Unknown":
        taints += [{"effect": "NoSchedule", "key": "node.kubernetes.io/unreachable", "timeAdded": since},
                   {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "timeAdded": since}]
    if taints:
        spec["taints"] = taints
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = "127.0.0.1"
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "creationTimestamp": iso(created),
                     "resourceVersion": str(int(now * 1000) % 10000000),
                     "uid": "%s-%s" % (suffix(name, "uid"), suffix(name, "uid2")),
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": spec,
        "status": {"addresses": [{"type": "InternalIP", "address": address},
                                 {"type": "Hostname", "address": name}],
                   "conditions": conditions,
                   "nodeInfo": {"architecture": "amd64", "containerRuntimeVersion": "containerd://1.6.28",
                                "kernelVersion": "6.1.0-18-amd64", "kubeProxyVersion": "v1.29.4",
                                "kubeletVersion": "v1.29.4", "operatingSystem": "linux",
                                "osImage": "Debian GNU/Linux 12 (bookworm)"}},
    }


def get_nodes(rest):
    output = None
    names = []
    while rest:
        item = rest.pop(0)
        if item in ("-o", "--output"):
            output = rest.pop(0) if rest else fail("error: flag needs an argument: 'o' in -o", 1)
        elif item.startswith("--output=") or item.startswith("-o="):
            output = item.split("=", 1)[1]
        elif item.startswith("-o") and len(item) > 2:
            output = item[2:]
        elif item.startswith("-"):
            fail("error: unknown flag: %s" % item, 1)
        else:
            names.append(item)
    now = time.time()
    with Cluster() as state:
        error = api_error(state, now)
        known = known_nodes(state)
        missing = [n for n in names if n not in known]
        items = [node_item(state, n, now) for n in (names or known) if n in known]
    if error:
        fail(error, 1)
    if missing:
        fail("\n".join('Error from server (NotFound): nodes "%s" not found' % n for n in missing), 1)
    if output == "json":
        document = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                    "items": items} if not names or len(names) > 1 else items[0]
        print(json.dumps(document, indent=4))
        return
    if output not in (None, "wide"):
        fail('error: unable to match a printer suitable for the output format "%s"' % output, 1)
    rows = [("NAME", "STATUS", "ROLES", "AGE", "VERSION")]
    for item in items:
        ready = [c for c in item["status"]["conditions"] if c["type"] == "Ready"][0]["status"]
        words = "Ready" if ready == "True" else "NotReady"
        if item["spec"].get("unschedulable"):
            words += ",SchedulingDisabled"
        rows.append((item["metadata"]["name"], words, "<none>", "12d", "v1.29.4"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("   ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def cordon(rest, on):
    names = [a for a in rest if not a.startswith("-")]
    if len(names) != 1:
        fail("error: USAGE: %s NODE [flags]" % ("cordon" if on else "uncordon"), 1)
    name = names[0]
    now = time.time()
    with Cluster() as state:
        error = api_error(state, now)
        if not error and name in known_nodes(state):
            node = node_of(state, name)
            was = node["cordoned"]
            node["cordoned"], node["cordoned_at"] = on, now
    if error:
        fail(error, 1)
    if name not in known_nodes(state):
        fail('Error from server (NotFound): nodes "%s" not found' % name, 1)
    word = "cordoned" if on else "uncordoned"
    print("node/%s %s%s" % (name, "already " if was == on else "", word))


def drain(rest):
    flags = [a for a in rest if a.startswith("-")]
    names = [a for a in rest if not a.startswith("-")]
    if len(names) != 1:
        fail("error: USAGE: drain NODE [flags]", 1)
    name = names[0]
    timeout = "0s"
    for flag in flags:
        key = flag.split("=", 1)[0]
        if key not in ("--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "--force",
                       "--grace-period", "--disable-eviction"):
            fail("error: unknown flag: %s" % key, 1)
        if key == "--timeout":
            timeout = flag.split("=", 1)[1] if "=" in flag else "0s"
    now = time.time()
    with Cluster() as state:
        error = api_error(state, now)
        known = name in known_nodes(state)
        if not error and known:
            node = node_of(state, name)
            was = node["cordoned"]
            node["cordoned"], node["cordoned_at"] = True, now
            pods = pods_of(state, name)
            failing = name in config(state).get("fail_drain", [])
            pause = delay(state, "drain", name)
    if error:
        fail(error, 1)
    if not known:
        fail('Error from server (NotFound): nodes "%s" not found' % name, 1)
    print("node/%s %scordoned" % (name, "already " if was else ""))
    daemons = [p for p, daemon in pods if daemon]
    if "--ignore-daemonsets" not in flags:
        fail("error: unable to drain node \"%s\" due to error: cannot delete DaemonSet-managed Pods (use "
             "--ignore-daemonsets to ignore): %s, continuing command...\nThere are pending nodes to be "
             "drained:\n %s\ncannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): %s"
             % (name, ", ".join(daemons), name, ", ".join(daemons)), 1)
    print("Warning: ignoring DaemonSet-managed Pods: " + ", ".join(daemons))
    workloads = [p for p, daemon in pods if not daemon]
    for pod in workloads:
        print("evicting pod " + pod)
    sys.stdout.flush()
    time.sleep(pause)
    if failing:
        namespace, pod = workloads[0].split("/")
        sys.stderr.write(
            "error when evicting pods/\"%s\" -n \"%s\" (will retry after 5s): Cannot evict pod as it would "
            "violate the pod's disruption budget.\n" % (pod, namespace))
        fail("There are pending nodes to be drained:\n %s\nerror: unable to drain node \"%s\" due to error: "
             "[error when evicting pods/\"%s\" -n \"%s\": global timeout reached: %s], continuing command..."
             % (name, name, pod, namespace, timeout), 1)
    for pod in workloads:
        print("pod/%s evicted" % pod.split("/")[1])
    print("node/%s drained" % name)


def kubectl(rest):
    with Cluster() as state:
        clustered = worker_only(state)
    if clustered:
        # NOTE: the real wrapper refuses on nodes joined with --worker, and exits 0.
        print(CLUSTERED + " Please use the microk8s.kubectl on the master.")
        return
    if rest[:2] in (["get", "nodes"], ["get", "node"], ["get", "no"]):
        get_nodes(rest[2:])
    elif rest[:1] == ["drain"]:
        drain(rest[1:])
    elif rest[:1] in (["cordon"], ["uncordon"]):
        cordon(rest[1:], rest[0] == "cordon")
    else:
        fail("mko lab microk8s stand-in: unsupported kubectl arguments: %s" % " ".join(rest), 64)


def start():
    with Cluster() as state:
        if worker_only(state):
            print(CLUSTERED)
            print("Use 'snap start microk8s' to start services on this node.")
            return
        pause = delay(state, "start")
    time.sleep(pause)
    now = time.time()
    with Cluster() as state:
        node = node_of(state, HOST)
        node["enabled"] = True
        if not node["running"]:
            node["running"], node["changed_at"] = True, now
            node["ready_at"] = now + float(config(state).get("ready_delay", 0.3))


def stop():
    with Cluster() as state:
        if worker_only(state):
            print(CLUSTERED)
            print("Use 'snap stop microk8s' to stop services on this node.")
            return
        pause = delay(state, "stop")
    time.sleep(pause)
    with Cluster() as state:
        node = node_of(state, HOST)
        node.update(enabled=False, running=False, ready_at=None, changed_at=time.time())
    print("Stopped.")


def status(rest):
    wait = "--wait-ready" in rest
    timeout = None
    if "--timeout" in rest:
        timeout = float(rest[rest.index("--timeout") + 1])
    with Cluster() as state:
        if worker_only(state):
            print(CLUSTERED + " Please use the microk8s status on the master.")
            return
    # NOTE: the real --wait-ready waits forever without --timeout; the stand-in gives up after 60 s.
    deadline = time.time() + (timeout if timeout is not None else (60 if wait else 0))
    while True:
        now = time.time()
        with Cluster() as state:
            ready = is_ready(state, HOST, now)
            voters = list(config(state).get("control_planes", []))[:3]
        if ready or not wait or now >= deadline:
            break
        time.sleep(0.05)
    if not ready:
        fail("microk8s is not running. Use microk8s inspect for a deeper inspection.", 1)
    masters = " ".join("%s:19001" % socket.gethostbyname(v) for v in voters) or "127.0.0.1:19001"
    print("microk8s is running")
    print("high-availability: %s" % ("yes" if len(voters) >= 3 else "no"))
    print("  datastore master nodes: %s" % masters)
    print("  datastore standby nodes: none")
    print("addons:\n  enabled:\n    dns                  # (core) CoreDNS\n"
          "    ha-cluster           # (core) Configure high availability on the current node\n"
          "    helm                 # (core) Helm - the package manager for Kubernetes\n"
          "    helm3                # (core) Helm 3 - the package manager for Kubernetes\n"
          "  disabled:\n    dashboard            # (core) The Kubernetes dashboard\n"
          "    hostpath-storage     # (core) Storage class; allocates storage from host directory")


if args[:1] == ["kubectl"]:
    kubectl(args[1:])
elif args == ["start"]:
    start()
elif args == ["stop"]:
    stop()
elif args[:1] == ["status"]:
    status(args[1:])
else:
    fail("mko lab microk8s stand-in: unsupported arguments: %s" % " ".join(args), 64)
"""

# ----------------------------------------------------------------------------- snap

_SNAP = r"""
args = sys.argv[1:]
verb = args[0] if args else ""
names = [a for a in args[1:] if not a.startswith("-")]
flags = [a for a in args[1:] if a.startswith("-")]
if verb not in ("start", "stop") or names != ["microk8s"] or any(
        f not in ("--enable", "--disable") for f in flags):
    fail("mko lab snap stand-in: unsupported arguments: %s" % " ".join(args), 64)
with Cluster() as state:
    node = node_of(state, HOST)
    now = time.time()
    if verb == "start":
        node["enabled"] = node["enabled"] or "--enable" in flags
        if not node["running"]:
            node["running"], node["changed_at"] = True, now
            node["ready_at"] = now + float(config(state).get("ready_delay", 0.3))
    else:
        node["enabled"] = node["enabled"] and "--disable" not in flags
        node["running"], node["ready_at"], node["changed_at"] = False, None, now
print("Started." if verb == "start" else "Stopped.")
"""

# ----------------------------------------------------------------------------- shutdown

_SHUTDOWN = r"""
args = sys.argv[1:]
action = "off"
when = "+1"  # shutdown's default
for arg in args:
    if arg in ("-h", "-P", "--poweroff", "-H", "--halt"):
        action = "off"
    elif arg in ("-r", "--reboot"):
        action = "reboot"
    elif arg.startswith("-"):
        fail("shutdown: invalid option -- '%s'" % arg.lstrip("-"), 1)
    else:
        when = arg
if when not in ("now", "+0"):
    fail("mko lab shutdown stand-in: only immediate shutdowns (now, +0) are simulated", 64)
request_power(action)
"""


# ----------------------------------------------------------------------------- host side


class Microk8sCluster:
    """The host's view of a lab's simulated MicroK8s cluster (the file every node's stand-ins share)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / STATE_DIR
        self.path = self.dir / "cluster.json"

    @classmethod
    def of(cls, running: RunningLab) -> Microk8sCluster:
        """Return the cluster of a lab started with ssh=True."""
        if running.ssh is None:
            from mko.lab.netns import LabError

            raise LabError("a simulated MicroK8s cluster needs a lab started with ssh=True")
        return cls(running.ssh.root)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "cluster.lock", "a") as lock:
            # The same lock the stand-ins take: their read-modify-write never interleaves with ours.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state: dict[str, Any] = json.loads(self.path.read_text())
            except FileNotFoundError:
                state = {"config": {}, "nodes": {}}
            yield state
            tmp = self.path.with_name(f".cluster.json.{os.getpid()}")
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
            os.replace(tmp, self.path)

    def configure(
        self,
        control_planes: Sequence[str],
        workers: Sequence[str] = (),
        *,
        worker_only: bool = True,
        ready_delay: float = 0.3,
        delays: dict[str, float | dict[str, float]] | None = None,
        fail_drain: Sequence[str] = (),
    ) -> None:
        """Say which nodes are control planes and workers (joined ``--worker`` unless told otherwise)."""
        with self._locked() as state:
            state["config"] = {
                "control_planes": list(control_planes),
                "workers": list(workers),
                "worker_only": list(workers) if worker_only else [],
                "ready_delay": ready_delay,
                "delays": dict(delays or {}),
                "fail_drain": list(fail_drain),
                "created": time.time() - 12 * 86400,
            }

    def update(self, **config: Any) -> None:
        """Change settings of the simulation (delays, fail_drain, ready_delay) while the lab runs."""
        with self._locked() as state:
            state.setdefault("config", {}).update(config)

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Return each node's simulated state, with ``ready`` worked out as kubectl would show it."""
        with self._locked() as state:
            now = time.time()
            found: dict[str, dict[str, Any]] = {}
            for name, node in state["nodes"].items():
                ready_at = node.get("ready_at")
                ready = bool(node["powered"] and node["running"] and ready_at is not None and now >= ready_at)
                found[name] = dict(node) | {"ready": ready}
            return found

    def set_node(self, hostname: str, **values: Any) -> None:
        """Change one node's state (e.g. ``cordoned=True`` as an operator's own cordon would)."""
        with self._locked() as state:
            node = state["nodes"].setdefault(hostname, _default_node())
            node.update(values)

    # ------------------------------------------------------------------ power hooks

    def booted(self, hostname: str) -> None:
        """At boot the services start only if enabled (``microk8s stop`` disabled them)."""
        with self._locked() as state:
            node = state["nodes"].setdefault(hostname, _default_node())
            now = time.time()
            node["powered"] = True
            node["boots"] = node.get("boots", 0) + 1
            if node["enabled"]:
                node["running"], node["changed_at"] = True, now
                node["ready_at"] = now + float(state.get("config", {}).get("ready_delay", 0.3))

    def halted(self, hostname: str) -> None:
        """Power gone: nothing runs, the node goes NotReady."""
        with self._locked() as state:
            node = state["nodes"].setdefault(hostname, _default_node())
            node.update(powered=False, running=False, ready_at=None, changed_at=time.time())


def _default_node() -> dict[str, Any]:
    return {
        "powered": False,
        "enabled": True,
        "running": False,
        "ready_at": None,
        "cordoned": False,
        "boots": 0,
    }


def configure_microk8s(running: RunningLab, control_planes: int = 1, **options: Any) -> Microk8sCluster:
    """Make the lab's first CONTROL_PLANES nodes control planes and the rest workers; return the cluster."""
    cluster = Microk8sCluster.of(running)
    names = [node.hostname for node in running.nodes]
    cluster.configure(names[:control_planes], names[control_planes:], **options)
    return cluster


def _on_boot(system: NodeSystem) -> None:
    Microk8sCluster(system.ssh.root).booted(system.hostname)


def _on_halt(system: NodeSystem) -> None:
    Microk8sCluster(system.ssh.root).halted(system.hostname)


register_standin(
    StandIn("microk8s", _COMMON + _MICROK8S, ("/snap/bin/microk8s",), on_boot=_on_boot, on_halt=_on_halt)
)
register_standin(StandIn("snap", _COMMON + _SNAP, ("/usr/bin/snap",)))
register_standin(StandIn("shutdown", _SHUTDOWN, ("/usr/sbin/shutdown", "/sbin/shutdown")))
