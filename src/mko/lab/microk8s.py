"""A simulated MicroK8s cluster for lab nodes: ``microk8s``, ``snap`` and ``shutdown`` stand-ins.

Every node of a lab started with ``ssh=True`` gets these commands (see mko.lab.nodesys); their code is
mko.lab.nodeside.microk8s, .snap and .shutdown, run by the nodes' own Python. This module is the host's
side: the tests' handle on the cluster, and what booting and losing power do to it. The stand-ins share
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
* ``microk8s status [-w|--wait-ready] [-t|--timeout N]`` reports the local node on stdout and exits 0
  even when MicroK8s is not running (canonical/microk8s #3974): ``microk8s is running`` with the HA
  lines, ``microk8s is not running. Use microk8s inspect for a deeper inspection.`` (also when quorum
  is lost), or ``microk8s is not running, try microk8s start`` after ``microk8s stop``.
* ``microk8s dbctl [--debug] backup [-o FILE]`` writes ``FILE.tar.gz`` (one directory of ``N.key`` /
  ``N.data`` pairs, one per datastore key: the nodes, the workloads, a few fixed keys) and prints
  ``The backup is: FILE.tar.gz``; exit 10 and "Please ensure the kubernetes apiserver is running and HA
  is enabled." where the datastore does not run (stopped, or not a control plane).
* ``kubectl get pods|pod|pdb|deploy,sts|pvc -o json``, ``get crd volumes.longhorn.io``, ``get
  volumes.longhorn.io -n longhorn-system -o json`` and ``scale KIND/NAME --replicas=N
  [--current-replicas=M] -n NS`` serve the workload model below.
* ``shutdown -h now`` (and ``-r``) asks the lab to power the node off (or reboot it).

Tests shape the cluster with :meth:`Microk8sCluster.configure` / :meth:`~Microk8sCluster.update`:
``delays`` (seconds a ``drain`` of a node, a ``stop`` or a ``start`` takes: one number, or
``{hostname: seconds}``), ``fail_drain`` (nodes whose ``web`` pod a PodDisruptionBudget ``default/web-pdb``
protects), ``ready_delay`` (from start to Ready), and the model:

* ``workloads``: ``[{"ns", "kind": "Deployment"|"StatefulSet", "name", "replicas", "labels",
  "volumes": [{"name", "storageClass"}], "claim_templates": [{"name", "storageClass"}]}]``; their pods
  are spread over the Ready, uncordoned workers (``db-0``, ``web-<hash>-<hash>``);
* ``pdbs``: ``[{"ns", "name", "selector": {labels}, "minAvailable"|"maxUnavailable"}]``, whose
  ``disruptionsAllowed`` is worked out from the healthy pods they match; a drain's eviction of a pod a
  budget with none allowed protects is refused and retried every ``retry_delay`` seconds (kubectl
  prints 5 s) until ``--timeout``; ``--disable-eviction`` deletes instead;
* ``longhorn``: ``{"detach_delay": s, "volumes": [{"name", "pvc": "ns/claim", "stuck"?}]}``: a volume is
  ``attached`` while a pod uses its claim, then ``detaching`` for ``detach_delay`` s (for ever when
  ``stuck``), then ``detached``;
* ``backup``: ``{"fail": true}`` (exit 1, ``Backup process failed. 1``), ``{"empty": true}`` (exit 0, an
  archive with no keys: canonical/microk8s #4308), ``{"delay": s}``;
* ``quorum_lost``: kubectl fails as with no dqlite leader even with the voters running (a stale
  cluster.yaml after a power loss, #3114); ``crashloop``: nodes whose kubelite never serves the API.

The versions modelled are cited in mko.lab.nodeside.microk8s. Every call lands in the calling node's
``calls.log`` (mko.lab.nodeside.standin), so tests can merge the logs of all nodes by time and assert
the exact order of commands across the cluster.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mko.lab.nodeside.cluster_state import STATE_DIR, Cluster, boot, default_node, halt, is_ready

if TYPE_CHECKING:
    from mko.lab.harness import RunningLab

__all__ = ["Microk8sCluster", "configure_microk8s"]

_MODEL_KEYS = {"workloads", "pdbs", "longhorn", "backup", "quorum_lost", "crashloop", "retry_delay"}

# ----------------------------------------------------------------------------- host side


class Microk8sCluster:
    """The host's view of a lab's simulated MicroK8s cluster (the file every node's stand-ins share)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / STATE_DIR
        self.path = self.dir / "cluster.json"

    @classmethod
    def of(cls, running: RunningLab) -> Microk8sCluster:
        """Return the cluster of a lab started with ssh=True."""
        if running.ssh is None:
            from mko.platform.errors import LabError

            raise LabError("a simulated MicroK8s cluster needs a lab started with ssh=True")
        return cls(running.ssh.root)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        # The stand-ins' own lock and file: their read-modify-write never interleaves with ours.
        with Cluster(str(self.root)) as state:
            yield state

    def configure(
        self,
        control_planes: Sequence[str],
        workers: Sequence[str] = (),
        *,
        worker_only: bool = True,
        ready_delay: float = 0.3,
        delays: dict[str, float | dict[str, float]] | None = None,
        fail_drain: Sequence[str] = (),
        **model: Any,
    ) -> None:
        """Say which nodes are control planes and workers (joined ``--worker`` unless told otherwise).

        ``model``: more of the simulated cluster (see the module docstring): ``workloads``, ``pdbs``,
        ``longhorn``, ``backup``, ``quorum_lost``, ``crashloop``, ``retry_delay``.
        """
        unknown = set(model) - _MODEL_KEYS
        if unknown:
            raise ValueError(f"unknown simulation settings: {sorted(unknown)}")
        with self._locked() as state:
            state["config"] = {
                "control_planes": list(control_planes),
                "workers": list(workers),
                "worker_only": list(workers) if worker_only else [],
                "ready_delay": ready_delay,
                "delays": dict(delays or {}),
                "fail_drain": list(fail_drain),
                "created": time.time() - 12 * 86400,
                **model,
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
                found[name] = dict(node) | {"ready": is_ready(state, name, now)}
            return found

    def replicas(self) -> dict[str, int]:
        """``{"ns/Kind/name": replicas}`` of the configured workloads, as ``kubectl scale`` left them."""
        with self._locked() as state:
            scaled = state.get("scale", {})
            return {
                f"{w['ns']}/{w['kind']}/{w['name']}": int(
                    scaled.get(f"{w['ns']}/{w['kind']}/{w['name']}", w.get("replicas", 1))
                )
                for w in state.get("config", {}).get("workloads", [])
            }

    def set_node(self, hostname: str, **values: Any) -> None:
        """Change one node's state (e.g. ``cordoned=True`` as an operator's own cordon would)."""
        with self._locked() as state:
            node = state["nodes"].setdefault(hostname, default_node())
            node.update(values)

    # ------------------------------------------------------------------ power hooks

    def booted(self, hostname: str) -> None:
        """At boot the services start only if enabled (``microk8s stop`` disabled them)."""
        with self._locked() as state:
            boot(state, hostname, time.time())

    def halted(self, hostname: str) -> None:
        """Power gone: nothing runs, the node goes NotReady."""
        with self._locked() as state:
            halt(state, hostname, time.time())


def configure_microk8s(running: RunningLab, control_planes: int = 1, **options: Any) -> Microk8sCluster:
    """Make the lab's first CONTROL_PLANES nodes control planes and the rest workers; return the cluster."""
    cluster = Microk8sCluster.of(running)
    names = [node.hostname for node in running.nodes]
    cluster.configure(names[:control_planes], names[control_planes:], **options)
    return cluster
