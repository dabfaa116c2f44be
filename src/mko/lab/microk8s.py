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

Versions modelled: MicroK8s 1.29 snap (``status.py``, ``dbctl.py`` of the k8s-dqlite migrator era,
the stop/start wrappers), kubectl 1.29 (``drain.go``: the eviction retry loop, the "global timeout
reached" tail with Go durations such as ``2m0s``, ``Warning:`` lines on stderr; verified byte for byte
against kubectl 1.32.4, whose drain code is the same), policy/v1 PodDisruptionBudgets, Longhorn 1.6
``volumes.longhorn.io`` (v1beta2).

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
_MODEL_KEYS = {"workloads", "pdbs", "longhorn", "backup", "quorum_lost", "crashloop", "retry_delay"}

# ----------------------------------------------------------------------------- shared by every stand-in

_COMMON = r"""
import fcntl, socket
CLUSTER_DIR = os.path.join(LAB, "microk8s")
HOST = socket.gethostname()
CLUSTERED = "This MicroK8s deployment is acting as a node in a cluster."
API_DOWN = ("The connection to the server 127.0.0.1:16443 was refused - did you specify the right host"
            " or port?")
NO_QUORUM = ("Error from server (Timeout): the server was unable to return a response in the time"
             " allotted, but may still be processing the request (%s)")


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


def quorum(state):
    # dqlite answers while a majority of its voters (the first three control planes) runs.
    if config(state).get("quorum_lost"):
        return False
    voters = list(config(state).get("control_planes", []))[:3]
    return not voters or sum(1 for v in voters if node_of(state, v)["running"]) > len(voters) // 2
"""

# ----------------------------------------------------------------------------- microk8s

_MICROK8S = r"""
import hashlib
from datetime import datetime, timezone

args = sys.argv[1:]


def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(state, now, what="get nodes"):
    # What kubectl on this node says when the API cannot answer (None when it can).
    me = node_of(state, HOST)
    if not me["running"]:
        if not me["enabled"]:  # `microk8s stop` left its stopped.lock
            return "microk8s is not running, try microk8s start"
        return API_DOWN
    if HOST in config(state).get("crashloop", []):
        # kubelite restarts over and over: nothing listens on 16443 (kubectl 1.29 klog lines first).
        line = ("E1207 03:47:58.685890   25204 memcache.go:265] couldn't get current server API group list:"
                " Get \"https://127.0.0.1:16443/api?timeout=32s\": dial tcp 127.0.0.1:16443: connect:"
                " connection refused")
        return "\n".join([line] * 5 + [API_DOWN])
    if not is_ready(state, HOST, now):
        return API_DOWN
    if not quorum(state):
        return NO_QUORUM % what
    return None


def suffix(name, salt, size=5):
    return hashlib.sha256((name + salt).encode()).hexdigest()[:size]


def go_duration(seconds):
    # Go's time.Duration.String(): 120s -> 2m0s, 1.5s -> 1.5s, 0.3s -> 300ms.
    if seconds < 1:
        return "%dms" % round(seconds * 1000) if seconds else "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = ("%g" % round(secs, 9)) + "s"
    if hours:
        return "%dh%dm%s" % (hours, minutes, text)
    if minutes:
        return "%dm%s" % (minutes, text)
    return text


def parse_duration(text):
    # Go's time.ParseDuration for what kubectl's --timeout takes: 120s, 2m, 1m30s, 1.5s, 300ms, 0s.
    import re
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        fail('Error: invalid argument "%s" for "--timeout" flag: time: invalid duration "%s"\n'
             "See 'kubectl drain --help' for usage." % (text, text), 1)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def workload_key(w):
    return "%s/%s/%s" % (w["ns"], w["kind"], w["name"])


def replicas_of(state, w):
    return int(state.setdefault("scale", {}).get(workload_key(w), w.get("replicas", 1)))


def schedulable(state, now):
    cfg = config(state)
    names = [n for n in known_nodes(state) if is_ready(state, n, now) and not node_of(state, n)["cordoned"]]
    workers = [n for n in names if n in cfg.get("workers", [])]
    return workers or names


def pod_name(w, index):
    if w["kind"] == "StatefulSet":
        return "%s-%d" % (w["name"], index)
    return "%s-%s-%s" % (w["name"], suffix(w["name"], "rs", 10), suffix(w["name"] + str(index), "pod"))


def all_pods(state, now):
    # Every pod: {ns, name, labels, node, owner kind, workload, claims}. DaemonSet calico on every running
    # node; one synthesized `web`/`coredns` pod per node; the configured workloads' replicas, placed on
    # schedulable nodes (workers first) unless a failed eviction pinned them to their node.
    pods = []
    cfg = config(state)
    pinned = state.setdefault("pinned", {})
    for name in known_nodes(state):
        node = node_of(state, name)
        if not node["powered"] or not node["running"]:
            continue
        pods.append({"ns": "kube-system", "name": "calico-node-" + suffix(name, "calico"),
                     "labels": {"k8s-app": "calico-node"}, "node": name, "owner": "DaemonSet",
                     "workload": "calico-node", "claims": []})
        if name in state.setdefault("drained", []):
            continue
        control = name in cfg.get("control_planes", [])
        if control:
            pod = {"ns": "kube-system", "name": "coredns-7745f9f87f-" + suffix(name, "web"),
                   "labels": {"k8s-app": "kube-dns"}, "workload": "coredns"}
        else:
            pod = {"ns": "default", "name": "web-6d8f7c9b5d-" + suffix(name, "web"), "labels": {"app": "web"},
                   "workload": "web"}
            if name in cfg.get("fail_drain", []):
                pod["labels"] = {"app": "web", "mko.lab/pdb": "blocked"}
        pod.update(node=name, owner="ReplicaSet", claims=[])
        pods.append(pod)
    places = schedulable(state, now)
    for w in cfg.get("workloads", []):
        for index in range(replicas_of(state, w)):
            name = pod_name(w, index)
            node = pinned.get("%s/%s" % (w["ns"], name))
            if node is None:
                if not places:
                    continue
                node = places[(index + len(w["name"])) % len(places)]
            claims = [c["name"] for c in w.get("volumes", [])]
            claims += ["%s-%s-%d" % (c["name"], w["name"], index) for c in w.get("claim_templates", [])]
            pods.append({"ns": w["ns"], "name": name, "labels": dict(w.get("labels", {})), "node": node,
                         "owner": "ReplicaSet" if w["kind"] == "Deployment" else "StatefulSet",
                         "workload": w["name"], "claims": claims})
    return pods


def pdbs(state, now):
    # PodDisruptionBudgets (policy/v1) with disruptionsAllowed worked out from the healthy pods they match.
    cfg = config(state)
    found = [dict(p) for p in cfg.get("pdbs", [])]
    if cfg.get("fail_drain"):
        found.append({"ns": "default", "name": "web-pdb", "selector": {"mko.lab/pdb": "blocked"},
                      "minAvailable": len(cfg["fail_drain"])})
    pods = all_pods(state, now)
    for pdb in found:
        matched = [p for p in pods if p["ns"] == pdb["ns"]
                   and all(p["labels"].get(k) == v for k, v in pdb["selector"].items())]
        healthy = sum(1 for p in matched if is_ready(state, p["node"], now))
        if "minAvailable" in pdb:
            desired = int(pdb["minAvailable"])
        else:
            desired = max(0, len(matched) - int(pdb.get("maxUnavailable", 1)))
        pdb.update(healthy=healthy, expected=len(matched), desired=desired,
                   allowed=max(0, healthy - desired))
    return found


def blocking_pdb(state, now, pod):
    for pdb in pdbs(state, now):
        if pdb["ns"] == pod["ns"] and all(pod["labels"].get(k) == v for k, v in pdb["selector"].items()):
            if pdb["allowed"] <= 0:
                return pdb
    return None


def pvcs(state):
    found = []
    for w in config(state).get("workloads", []):
        for claim in w.get("volumes", []):
            found.append((w["ns"], claim["name"], claim.get("storageClass", "microk8s-hostpath")))
        for claim in w.get("claim_templates", []):
            for index in range(int(w.get("replicas", 1))):
                found.append((w["ns"], "%s-%s-%d" % (claim["name"], w["name"], index),
                              claim.get("storageClass", "microk8s-hostpath")))
    return found


def volume_states(state, now):
    # Longhorn volumes: attached while a pod using their claim runs; then detaching for `detach_delay`
    # seconds (per volume: `detach_delay` in its entry), or forever when `stuck`.
    longhorn = config(state).get("longhorn") or {}
    pods = all_pods(state, now)
    gone_at = state.setdefault("claims_gone", {})
    out = []
    for volume in longhorn.get("volumes", []):
        ns, claim = volume["pvc"].split("/", 1)
        users = [p for p in pods if p["ns"] == ns and claim in p["claims"]]
        last = state.setdefault("attached_to", {})
        if users:
            last[volume["pvc"]] = users[0]["node"]
        node = last.get(volume["pvc"], volume.get("node", ""))
        if users:
            gone_at.pop(volume["pvc"], None)
            current = "attached"
        else:
            since = gone_at.setdefault(volume["pvc"], now)
            wait = float(volume.get("detach_delay", longhorn.get("detach_delay", 0)))
            current = "detaching" if volume.get("stuck") or now < since + wait else "detached"
        out.append(dict(volume, state=current, current=node if current != "detached" else ""))
    return out


def iso_obj(kind, ns, name, extra):
    meta = {"name": name, "uid": "%s-%s" % (suffix(name, "uid", 8), suffix(name, "u2", 4)),
            "resourceVersion": "1", "creationTimestamp": "2026-11-25T09:14:21Z"}
    if ns is not None:
        meta["namespace"] = ns
    item = {"apiVersion": "v1", "kind": kind, "metadata": meta}
    for key, value in extra.items():
        if key == "metadata":
            meta.update(value)
        else:
            item[key] = value
    return item


def pod_item(state, pod):
    owner = pod["workload"] if pod["owner"] != "ReplicaSet" else pod["name"].rsplit("-", 1)[0]
    volumes = [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in pod["claims"]]
    return iso_obj("Pod", pod["ns"], pod["name"], {
        "metadata": {"labels": pod["labels"], "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": pod["owner"], "name": owner, "controller": True,
             "blockOwnerDeletion": True, "uid": suffix(owner, "owner", 8)}]},
        "spec": {"nodeName": pod["node"], "volumes": volumes,
                 "containers": [{"name": pod["workload"], "image": "registry.k8s.io/pause:3.9"}]},
        "status": {"phase": "Running"}})


def workload_item(state, w):
    replicas = replicas_of(state, w)
    spec = {"replicas": replicas, "selector": {"matchLabels": dict(w.get("labels", {}))},
            "template": {"metadata": {"labels": dict(w.get("labels", {}))}, "spec": {
                "containers": [{"name": w["name"], "image": "registry.k8s.io/pause:3.9"}],
                "volumes": [{"name": c["name"], "persistentVolumeClaim": {"claimName": c["name"]}}
                            for c in w.get("volumes", [])]}}}
    if w["kind"] == "StatefulSet":
        spec["serviceName"] = w["name"]
        spec["volumeClaimTemplates"] = [
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": c["name"]},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": c.get("storageClass",
                      "microk8s-hostpath"), "resources": {"requests": {"storage": "1Gi"}}}}
            for c in w.get("claim_templates", [])]
    annotations = state.setdefault("annotations", {}).get(workload_key(w), {})
    item = iso_obj(w["kind"], w["ns"], w["name"], {
        "metadata": {"labels": dict(w.get("labels", {})), "annotations": annotations, "generation": 1},
        "spec": spec, "status": {"replicas": replicas, "readyReplicas": replicas,
                                 "availableReplicas": replicas, "observedGeneration": 1}})
    item["apiVersion"] = "apps/v1"
    return item


def pdb_item(pdb):
    spec = {"selector": {"matchLabels": pdb["selector"]}}
    if "minAvailable" in pdb:
        spec["minAvailable"] = pdb["minAvailable"]
    else:
        spec["maxUnavailable"] = pdb.get("maxUnavailable", 1)
    allowed = pdb["allowed"]
    item = iso_obj("PodDisruptionBudget", pdb["ns"], pdb["name"], {"spec": spec, "status": {
        "currentHealthy": pdb["healthy"], "desiredHealthy": pdb["desired"], "disruptionsAllowed": allowed,
        "expectedPods": pdb["expected"], "observedGeneration": 1,
        "conditions": [{"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                        "reason": "SufficientPods" if allowed else "InsufficientPods", "message": "",
                        "observedGeneration": 1, "lastTransitionTime": "2026-11-25T09:14:21Z"}]}})
    item["apiVersion"] = "policy/v1"
    return item


def volume_item(volume):
    ns, claim = volume["pvc"].split("/", 1)
    item = iso_obj("Volume", "longhorn-system", volume["name"], {
        "spec": {"nodeID": volume["current"], "numberOfReplicas": 3, "dataEngine": "v1",
                 "size": "1073741824"},
        "status": {"state": volume["state"], "currentNodeID": volume["current"],
                   "robustness": "healthy" if volume["state"] == "attached" else "unknown",
                   "kubernetesStatus": {"namespace": ns, "pvcName": claim, "pvName": volume["name"],
                                        "workloadsStatus": []}}})
    item["apiVersion"] = "longhorn.io/v1beta2"
    return item


def as_list(items):
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def get_objects(rest):
    # kubectl get for what mko reads as JSON: pods, pod, pdb, deploy,sts, pvc, crd, Longhorn volumes.
    output = namespace = field = selector = None
    all_ns = False
    words = []
    while rest:
        item = rest.pop(0)
        if item in ("-o", "--output"):
            output = rest.pop(0) if rest else None
        elif item in ("-n", "--namespace"):
            namespace = rest.pop(0) if rest else None
        elif item in ("-A", "--all-namespaces"):
            all_ns = True
        elif item == "--field-selector":
            field = rest.pop(0) if rest else None
        elif item in ("-l", "--selector"):
            selector = rest.pop(0) if rest else None
        elif item.startswith("-"):
            fail("error: unknown flag: %s\nSee 'kubectl get --help' for usage." % item.split("=")[0], 1)
        else:
            words.append(item)
    if not words:
        fail("You must specify the type of resource to get. Use \"kubectl api-resources\" for a complete "
             "list of supported resources.\n\nerror: Required resource not specified.", 1)
    kind, names = words[0], words[1:]
    now = time.time()
    with Cluster() as state:
        error = api_error(state, now, "get " + kind.split(".")[0])
        cfg = config(state)
        pods = all_pods(state, now)
        budgets = pdbs(state, now)
        volumes = volume_states(state, now)
        workloads = [workload_item(state, w) for w in cfg.get("workloads", [])]
        claims = pvcs(state)
        longhorn = bool(cfg.get("longhorn"))
    if error:
        fail(error, 1)
    wanted = [p for p in selector.split(",") if p] if selector else []

    def labelled(labels):
        for term in wanted:
            key, eq, value = term.partition("=")
            if key not in labels or (eq and labels[key] != value):
                return False
        return True

    def in_ns(ns):
        return all_ns or ns == (namespace or "default")

    if kind in ("pods", "pod", "po"):
        chosen = [p for p in pods if in_ns(p["ns"]) and labelled(p["labels"])]
        if field:
            key, _, value = field.partition("=")
            if key != "spec.nodeName":
                fail('Error from server (BadRequest): Unable to find "/v1, Resource=pods" that match label '
                     'selector "", field selector "%s": field label not supported: %s' % (field, key), 1)
            chosen = [p for p in chosen if p["node"] == value]
        if names:
            found = [p for p in chosen if p["name"] in names]
            if len(found) < len(names):
                missing = [n for n in names if n not in {p["name"] for p in found}]
                fail('Error from server (NotFound): pods "%s" not found' % missing[0], 1)
            if len(names) == 1:
                print(json.dumps(pod_item(state, found[0]), indent=4))
                return
            chosen = found
        items = [pod_item(state, p) for p in chosen]
    elif kind in ("pdb", "poddisruptionbudgets", "poddisruptionbudget"):
        items = [pdb_item(p) for p in budgets if in_ns(p["ns"])]
    elif kind in ("deploy,sts", "deployments,statefulsets", "sts,deploy"):
        items = [w for w in workloads
                 if in_ns(w["metadata"]["namespace"]) and labelled(w["metadata"]["labels"])]
    elif kind in ("pvc", "persistentvolumeclaims"):
        items = [iso_obj("PersistentVolumeClaim", ns, name, {
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": sc, "volumeName": "pvc-" +
                     suffix(ns + name, "pv", 8), "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}}) for ns, name, sc in claims if in_ns(ns)]
    elif kind in ("crd", "customresourcedefinitions") and names == ["volumes.longhorn.io"]:
        if not longhorn:
            fail('Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io '
                 '"volumes.longhorn.io" not found', 1)
        print("NAME                  CREATED AT\nvolumes.longhorn.io   2024-05-02T09:14:21Z")
        return
    elif kind in ("volumes.longhorn.io", "volumes", "lhv"):
        if not longhorn:
            fail('error: the server doesn\'t have a resource type "%s"' % kind.split(".")[0], 1)
        items = [volume_item(v) for v in volumes if in_ns("longhorn-system")]
    else:
        fail("mko lab microk8s stand-in: unsupported kubectl get: %s" % " ".join(words), 64)
    if output != "json":
        fail("mko lab microk8s stand-in: kubectl get %s is only simulated with -o json" % kind, 64)
    print(json.dumps(as_list(items), indent=4))


def scale(rest):
    # kubectl scale {deployment|statefulset}/NAME --replicas=N [--current-replicas=M] -n NS
    namespace, replicas, current, target = "default", None, None, None
    while rest:
        item = rest.pop(0)
        if item in ("-n", "--namespace"):
            namespace = rest.pop(0)
        elif item.startswith("--replicas="):
            replicas = int(item.split("=", 1)[1])
        elif item.startswith("--current-replicas="):
            current = int(item.split("=", 1)[1])
        elif item.startswith("-"):
            fail("error: unknown flag: %s\nSee 'kubectl scale --help' for usage." % item.split("=")[0], 1)
        else:
            target = item
    if replicas is None:
        fail("error: required flag(s) \"replicas\" not set", 1)
    resource, _, name = (target or "").partition("/")
    kinds = {"deployment": "Deployment", "deploy": "Deployment", "statefulset": "StatefulSet",
             "sts": "StatefulSet"}
    if resource not in kinds or not name:
        fail("error: the server doesn't have a resource type \"%s\"" % resource, 1)
    now = time.time()
    with Cluster() as state:
        error = api_error(state, now, "patch " + resource + "s")
        w = [w for w in config(state).get("workloads", []) if w["ns"] == namespace and w["name"] == name
             and w["kind"] == kinds[resource]]
        was = replicas_of(state, w[0]) if w else None
        if not error and w and (current is None or current == was):
            state["scale"][workload_key(w[0])] = replicas
    if error:
        fail(error, 1)
    if not w:
        fail('Error from server (NotFound): %ss.apps "%s" not found' % (resource, name), 1)
    if current is not None and current != was:
        fail("error: Expected replicas to be %d, was %d" % (current, was), 1)
    print("%s.apps/%s scaled" % (kinds[resource].lower(), name))


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
            if not on and name in state.setdefault("drained", []):
                state["drained"].remove(name)  # schedulable again: its pods may come back
    if error:
        fail(error, 1)
    if name not in known_nodes(state):
        fail('Error from server (NotFound): nodes "%s" not found' % name, 1)
    word = "cordoned" if on else "uncordoned"
    print("node/%s %s%s" % (name, "already " if was == on else "", word))


def drain(rest):
    # kubectl 1.29 drain.go: cordon, then evict (or, with --disable-eviction, delete) every pod that is
    # not DaemonSet-managed; an eviction a PodDisruptionBudget refuses (429) is retried every 5 s
    # (`retry_delay` in the lab) until --timeout ("0s": for ever), then the error tail below, exit 1.
    flags = [a for a in rest if a.startswith("-")]
    names = [a for a in rest if not a.startswith("-")]
    if len(names) != 1:
        fail("error: USAGE: drain NODE [flags]\nSee 'kubectl drain -h' for help and examples", 1)
    name = names[0]
    timeout_text = "0s"
    for flag in flags:
        key = flag.split("=", 1)[0]
        if key not in ("--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "--force",
                       "--grace-period", "--disable-eviction"):
            fail("Error: unknown flag: %s\nSee 'kubectl drain --help' for usage." % key, 1)
        if key == "--timeout":
            timeout_text = flag.split("=", 1)[1] if "=" in flag else "0s"
    timeout = parse_duration(timeout_text)
    evict = "--disable-eviction" not in flags
    now = time.time()
    with Cluster() as state:
        error = api_error(state, now, "get nodes")
        known = name in known_nodes(state)
        if not error and known:
            pods = [p for p in all_pods(state, now) if p["node"] == name]
            blocked = {p["name"] for p in pods if p["owner"] != "DaemonSet" and evict
                       and blocking_pdb(state, now, p)}
            node = node_of(state, name)
            was = node["cordoned"]
            node["cordoned"], node["cordoned_at"] = True, now
            pause = delay(state, "drain", name)
            retry = float(config(state).get("retry_delay", 5.0))
    if error:
        fail(error, 1)
    if not known:
        fail('Error from server (NotFound): nodes "%s" not found' % name, 1)
    print("node/%s %scordoned" % (name, "already " if was else ""))
    sys.stdout.flush()
    daemons = ["%s/%s" % (p["ns"], p["name"]) for p in pods if p["owner"] == "DaemonSet"]
    if "--ignore-daemonsets" not in flags:
        fail("error: unable to drain node \"%s\" due to error: cannot delete DaemonSet-managed Pods (use "
             "--ignore-daemonsets to ignore): %s, continuing command...\nThere are pending nodes to be "
             "drained:\n %s\ncannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): %s"
             % (name, ", ".join(daemons), name, ", ".join(daemons)), 1)
    sys.stderr.write("Warning: ignoring DaemonSet-managed Pods: " + ", ".join(daemons) + "\n")
    sys.stderr.flush()
    workloads = [p for p in pods if p["owner"] != "DaemonSet"]
    if evict:
        for pod in workloads:
            print("evicting pod %s/%s" % (pod["ns"], pod["name"]))
    sys.stdout.flush()
    time.sleep(pause)
    free = [p for p in workloads if p["name"] not in blocked]
    stuck = [p for p in workloads if p["name"] in blocked]
    with Cluster() as state:
        for pod in free:
            state.setdefault("pinned", {}).pop("%s/%s" % (pod["ns"], pod["name"]), None)
        if not stuck and name not in state.setdefault("drained", []):
            state["drained"].append(name)
    for pod in free:
        print("pod/%s %s" % (pod["name"], "evicted" if evict else "deleted"))
    sys.stdout.flush()
    if not stuck:
        print("node/%s drained" % name)
        return
    deadline = time.time() + timeout if timeout else None
    while True:
        for pod in stuck:
            sys.stderr.write("error when evicting pods/\"%s\" -n \"%s\" (will retry after 5s): Cannot "
                             "evict pod as it would violate the pod's disruption budget.\n"
                             % (pod["name"], pod["ns"]))
        sys.stderr.flush()
        if deadline is not None and time.time() + retry > deadline:
            time.sleep(max(0.0, deadline - time.time()))
            break
        time.sleep(retry)
        for pod in stuck:
            print("evicting pod %s/%s" % (pod["ns"], pod["name"]))
        sys.stdout.flush()
    with Cluster() as state:
        for pod in stuck:
            state.setdefault("pinned", {})["%s/%s" % (pod["ns"], pod["name"])] = name
    errors = ["error when evicting pods/\"%s\" -n \"%s\": global timeout reached: %s"
              % (p["name"], p["ns"], go_duration(timeout)) for p in stuck]
    joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    lines = ["There are pending pods in node \"%s\" when an error occurred: %s" % (name, joined)]
    lines += ["pod/" + p["name"] for p in stuck]
    lines.append("error: unable to drain node \"%s\" due to error: %s, continuing command..."
                 % (name, joined))
    lines += ["There are pending nodes to be drained:", " " + name]
    lines += errors
    fail("\n".join(lines), 1)


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
    elif rest[:1] == ["get"]:
        get_objects(rest[1:])
    elif rest[:1] == ["scale"]:
        scale(rest[1:])
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
    # MicroK8s 1.29 status.py: the answer is on stdout and the exit code is 0 even when MicroK8s is not
    # running or --wait-ready timed out (canonical/microk8s #3974, #3927): read the first line.
    wait = timeout = None
    items = list(rest)
    while items:
        item = items.pop(0)
        if item in ("-w", "--wait-ready"):
            wait = True
        elif item in ("-t", "--timeout"):
            timeout = float(items.pop(0)) if items else 0
        elif item.startswith("--timeout="):
            timeout = float(item.split("=", 1)[1])
        elif item in ("--format",):
            if (items.pop(0) if items else "") != "pretty":
                fail("mko lab microk8s stand-in: only --format pretty is simulated", 64)
        elif item.startswith("-"):
            fail("Usage: microk8s status [OPTIONS]\nTry 'microk8s status -h' for help.\n\n"
                 "Error: No such option: %s" % item, 2)
    with Cluster() as state:
        if worker_only(state):
            print(CLUSTERED + " Please use the microk8s status on the master.")
            return
        if not node_of(state, HOST)["enabled"] and not node_of(state, HOST)["running"]:
            print("microk8s is not running, try microk8s start")
            return
    # NOTE: the real --wait-ready waits forever without --timeout; the stand-in gives up after 60 s.
    deadline = time.time() + (timeout if timeout else (60 if wait else 0))
    while True:
        now = time.time()
        with Cluster() as state:
            ready = is_ready(state, HOST, now) and quorum(state) and HOST not in config(state).get(
                "crashloop", [])
            voters = list(config(state).get("control_planes", []))[:3]
            up = [v for v in voters if node_of(state, v)["running"]]
        if ready or not wait or now >= deadline:
            break
        time.sleep(0.05)
    if not ready:
        print("microk8s is not running. Use microk8s inspect for a deeper inspection.")
        return
    masters = " ".join("%s:19001" % socket.gethostbyname(v) for v in up) or "127.0.0.1:19001"
    print("microk8s is running")
    print("high-availability: %s" % ("yes" if len(up) >= 3 else "no"))
    print("  datastore master nodes: %s" % masters)
    print("  datastore standby nodes: none")
    print("addons:\n  enabled:\n    dns                  # (core) CoreDNS\n"
          "    ha-cluster           # (core) Configure high availability on the current node\n"
          "    helm                 # (core) Helm - the package manager for Kubernetes\n"
          "    helm3                # (core) Helm 3 - the package manager for Kubernetes\n"
          "  disabled:\n    dashboard            # (core) The Kubernetes dashboard\n"
          "    hostpath-storage     # (core) Storage class; allocates storage from host directory")


def dbctl(rest):
    # MicroK8s 1.29 dbctl.py (k8s-dqlite migrator era): `dbctl [--debug] backup [-o FILE]`. Needs the
    # datastore running here (kine.sock): else exit 10. Writes FILE.tar.gz holding FILE/N.key + N.data.
    # Lab failure modes (config "backup"): fail (migrator error, exit 1), empty (canonical/microk8s #4308:
    # exit 0, an archive with no keys), delay (seconds it takes; a hang is a long delay).
    import tarfile, io
    items = [a for a in rest if a != "--debug"]
    if not items:
        print("usage: dbctl [-h] [--debug] {restore,backup} ...")
        return
    if items[0] != "backup":
        fail("mko lab microk8s stand-in: only `dbctl backup` is simulated", 64)
    out = None
    if items[1:2] == ["-o"] and len(items) == 3:
        out = items[2]
    elif len(items) != 1:
        fail("usage: dbctl [-h] [--debug] {restore,backup} ...\ndbctl: error: unrecognized arguments: %s"
             % " ".join(items[1:]), 2)
    with Cluster() as state:
        me = node_of(state, HOST)
        cfg = config(state)
        if worker_only(state):
            print(CLUSTERED)
            sys.exit(1)
        dqlite = HOST in cfg.get("control_planes", [])
        if not (me["running"] and dqlite):
            print("Please ensure the kubernetes apiserver is running and HA is enabled.")
            sys.exit(10)
        mode = dict(cfg.get("backup") or {})
        keys = ["/registry/minions/" + n for n in known_nodes(state)]
        keys += ["/registry/%s/%s/%s" % (w["kind"].lower() + "s", w["ns"], w["name"])
                 for w in cfg.get("workloads", [])]
        keys += ["/registry/namespaces/default", "/registry/namespaces/kube-system",
                 "/registry/services/specs/default/kubernetes"]
        healthy = quorum(state)
    name = out or "backup-" + datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    if name.endswith(".tar.gz"):
        name = name[:-len(".tar.gz")]
    print("Backing up the datastore")
    sys.stdout.flush()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    endpoint = "unix:///var/snap/microk8s/current/var/kubernetes/backend/kine.sock:12379"
    base = os.path.basename(name)
    sys.stderr.write('time="%s" level=info msg="Starting migrator" dir=/tmp/tmpab12cd/%s endpoint="%s" '
                     "mode=backup-dqlite\n" % (stamp, base, endpoint))
    time.sleep(float(mode.get("delay", 0)))
    if mode.get("fail") or not healthy:
        sys.stderr.write('time="%s" level=fatal msg="Failed to backup dqlite" error="context deadline '
                         'exceeded"\n' % stamp)
        print("Backup process failed. 1")
        sys.exit(1)
    if mode.get("empty"):
        keys = []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(base)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
        for index, key in enumerate(keys):
            sys.stderr.write('time="%s" level=info msg="Writing key" index=%d key=%s len=%d\n'
                             % (stamp, index, key, 64))
            for part, data in (("key", key.encode()), ("data", json.dumps({"key": key}).encode())):
                info = tarfile.TarInfo("%s/%d.%s" % (base, index, part))
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    with open(name + ".tar.gz", "wb") as handle:
        handle.write(buffer.getvalue())
    print("The backup is: %s.tar.gz" % name)


if args[:1] == ["kubectl"]:
    kubectl(args[1:])
elif args == ["start"]:
    start()
elif args == ["stop"]:
    stop()
elif args[:1] == ["status"]:
    status(args[1:])
elif args[:1] == ["dbctl"]:
    dbctl(args[1:])
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
            from mko.platform.errors import LabError

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
                ready_at = node.get("ready_at")
                ready = bool(node["powered"] and node["running"] and ready_at is not None and now >= ready_at)
                found[name] = dict(node) | {"ready": ready}
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
