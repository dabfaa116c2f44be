"""The simulated MicroK8s cluster every node shares: ``LAB/microk8s/cluster.json`` under a lock.

Read and written by the ``microk8s`` and ``snap`` stand-ins on the nodes and by mko.lab.microk8s on
the host (the same lock, so their read-modify-write never interleaves). The document's shape is drawn
in mko.lab.microk8s's docstring.
"""

from __future__ import annotations

import fcntl
import json
import os

TYPE_CHECKING = False  # see standin: no typing import at run time
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

    State = dict[str, Any]

STATE_DIR = "microk8s"
CLUSTERED = "This MicroK8s deployment is acting as a node in a cluster."
API_DOWN = (
    "The connection to the server 127.0.0.1:16443 was refused - did you specify the right host or port?"
)
NO_QUORUM = (
    "Error from server (Timeout): the server was unable to return a response in the time"
    " allotted, but may still be processing the request ({})"
)


def default_node() -> dict[str, Any]:
    """A node the cluster has not seen boot yet."""
    return {
        "powered": False,
        "enabled": True,
        "running": False,
        "ready_at": None,
        "cordoned": False,
        "boots": 0,
    }


class Cluster:
    """The shared state under an exclusive lock; written back when the block ends without an error."""

    def __init__(self, lab: str) -> None:
        self.dir = os.path.join(lab, STATE_DIR)
        self.state: State = {}

    def __enter__(self) -> State:
        os.makedirs(self.dir, exist_ok=True)
        self._lock = open(os.path.join(self.dir, "cluster.lock"), "a")  # held until __exit__
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            with open(os.path.join(self.dir, "cluster.json")) as f:
                self.state = json.load(f)
        except FileNotFoundError:
            self.state = {"config": {}, "nodes": {}}
        return self.state

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                path = os.path.join(self.dir, "cluster.json")
                tmp = os.path.join(self.dir, f"cluster.json.{os.getpid()}")
                with open(tmp, "w") as f:
                    json.dump(self.state, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
        finally:
            self._lock.close()


def node_of(state: State, name: str) -> dict[str, Any]:
    """Return node NAME's entry, adding a fresh one for a node never seen."""
    node: dict[str, Any] = state["nodes"].setdefault(name, default_node())
    return node


def config(state: State) -> dict[str, Any]:
    """Return the simulation's settings (see Microk8sCluster.configure)."""
    cfg: dict[str, Any] = state.setdefault("config", {})
    return cfg


def delay(state: State, what: str, name: str) -> float:
    """Seconds WHAT takes on node NAME: one number for every node, or {hostname: seconds}."""
    value = config(state).get("delays", {}).get(what, 0)
    if isinstance(value, dict):
        value = value.get(name, 0)
    return float(value)


def start_services(state: State, node: dict[str, Any], now: float) -> None:
    """Start NODE's services unless they run: it turns Ready ``ready_delay`` seconds from NOW."""
    if not node["running"]:
        node["running"], node["changed_at"] = True, now
        node["ready_at"] = now + float(config(state).get("ready_delay", 0.3))


def boot(state: State, name: str, now: float) -> None:
    """Node NAME boots at NOW: its services start only if enabled (``microk8s stop`` disabled them)."""
    node = node_of(state, name)
    node["powered"] = True
    node["boots"] = node.get("boots", 0) + 1
    if node["enabled"]:
        node["running"], node["changed_at"] = True, now
        node["ready_at"] = now + float(state.get("config", {}).get("ready_delay", 0.3))


def halt(state: State, name: str, now: float) -> None:
    """Node NAME loses power at NOW: nothing runs, it goes NotReady."""
    node_of(state, name).update(
        powered=False, running=False, ready_at=None, changed_at=now, change_until=None
    )


def is_ready(state: State, name: str, now: float) -> bool:
    """Return whether node NAME is Ready at NOW: powered, its services running, past its ready time."""
    node = state["nodes"].get(name)
    return bool(
        node
        and node["powered"]
        and node["running"]
        and node["ready_at"] is not None
        and now >= node["ready_at"]
    )


def known_nodes(state: State) -> list[str]:
    """The cluster's nodes: control planes, workers, then any other node seen, by name."""
    cfg = config(state)
    names = list(cfg.get("control_planes", [])) + list(cfg.get("workers", []))
    return names + sorted(n for n in state["nodes"] if n not in names)


def worker_only(state: State, host: str) -> bool:
    """Return whether HOST joined with ``--worker`` (the wrappers refuse most commands there)."""
    return host in config(state).get("worker_only", [])


def quorum(state: State) -> bool:
    """dqlite answers while a majority of its voters (the first three control planes) runs."""
    if config(state).get("quorum_lost"):
        return False
    voters = list(config(state).get("control_planes", []))[:3]
    return not voters or sum(1 for v in voters if node_of(state, v)["running"]) > len(voters) // 2
