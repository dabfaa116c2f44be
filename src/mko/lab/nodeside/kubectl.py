"""``microk8s kubectl``: nodes, drain, cordon/uncordon, the workload model (pods, budgets, claims,
Longhorn volumes) and scale, over the cluster every node shares (:mod:`.cluster_state`).

Output and exit codes copy kubectl 1.29 (``drain.go``: the eviction retry loop, the "global timeout
reached" tail with Go durations such as ``2m0s``, ``Warning:`` lines on stderr; verified byte for byte
against kubectl 1.32.4, whose drain code is the same) against a MicroK8s 1.29 API server, with
policy/v1 PodDisruptionBudgets and Longhorn 1.6 ``volumes.longhorn.io`` (v1beta2). What the model
holds, and how tests shape it, is described in mko.lab.microk8s.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import UTC, datetime

from .cluster_state import (
    API_DOWN,
    CLUSTERED,
    NO_QUORUM,
    Cluster,
    config,
    default_node,
    delay,
    is_ready,
    known_nodes,
    node_of,
    quorum,
    worker_only,
)
from .standin import Context, fail

TYPE_CHECKING = False  # see standin: no typing import at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .cluster_state import State

    Obj = dict[str, Any]

# kubelite restarts over and over: nothing listens on 16443 (kubectl 1.29 klog lines first).
_CRASHLOOP_LINE = (
    "E1207 03:47:58.685890   25204 memcache.go:265] couldn't get current server API group list:"
    ' Get "https://127.0.0.1:16443/api?timeout=32s": dial tcp 127.0.0.1:16443: connect:'
    " connection refused"
)


def iso(t: float) -> str:
    """Kubernetes' timestamp format."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(ctx: Context, state: State, now: float, what: str = "get nodes") -> str | None:
    """What kubectl on this node says when the API cannot answer (None when it can)."""
    me = node_of(state, ctx.host)
    if not me["running"]:
        if not me["enabled"]:  # `microk8s stop` left its stopped.lock
            return "microk8s is not running, try microk8s start"
        return API_DOWN
    if ctx.host in config(state).get("crashloop", []):
        return "\n".join([_CRASHLOOP_LINE] * 5 + [API_DOWN])
    if not is_ready(state, ctx.host, now):
        return API_DOWN
    if not quorum(state):
        return NO_QUORUM.format(what)
    return None


def suffix(name: str, salt: str, size: int = 5) -> str:
    """A stable pseudo-random name part (pod hashes, uids)."""
    return hashlib.sha256((name + salt).encode()).hexdigest()[:size]


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String(): 120s -> 2m0s, 1.5s -> 1.5s, 0.3s -> 300ms."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms" if seconds else "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 9):g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for what kubectl's --timeout takes: 120s, 2m, 1m30s, 1.5s, 300ms, 0s."""
    import re

    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        fail(
            f'Error: invalid argument "{text}" for "--timeout" flag: time: invalid duration "{text}"\n'
            "See 'kubectl drain --help' for usage.",
            1,
        )
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


# ----------------------------------------------------------------------------- the workload model


def workload_key(w: Obj) -> str:
    """``ns/Kind/name`` of a configured workload."""
    return f"{w['ns']}/{w['kind']}/{w['name']}"


def replicas_of(state: State, w: Obj) -> int:
    """A workload's replicas, as ``kubectl scale`` left them."""
    return int(state.setdefault("scale", {}).get(workload_key(w), w.get("replicas", 1)))


def schedulable(state: State, now: float) -> list[str]:
    """Nodes a pod can be placed on: Ready and uncordoned, workers when there are any."""
    cfg = config(state)
    names = [n for n in known_nodes(state) if is_ready(state, n, now) and not node_of(state, n)["cordoned"]]
    workers = [n for n in names if n in cfg.get("workers", [])]
    return workers or names


def pod_name(w: Obj, index: int) -> str:
    """Replica INDEX's pod name: ``db-0`` for a StatefulSet, ``web-<hash>-<hash>`` for a Deployment."""
    if w["kind"] == "StatefulSet":
        return f"{w['name']}-{index}"
    return f"{w['name']}-{suffix(w['name'], 'rs', 10)}-{suffix(w['name'] + str(index), 'pod')}"


def _node_pods(state: State, name: str) -> list[Obj]:
    # DaemonSet calico on every running node; one synthesized `web`/`coredns` pod per undrained node.
    cfg = config(state)
    pods: list[Obj] = [
        {
            "ns": "kube-system",
            "name": "calico-node-" + suffix(name, "calico"),
            "labels": {"k8s-app": "calico-node"},
            "node": name,
            "owner": "DaemonSet",
            "workload": "calico-node",
            "claims": [],
        }
    ]
    if name in state.setdefault("drained", []):
        return pods
    pod: Obj
    if name in cfg.get("control_planes", []):
        pod = {
            "ns": "kube-system",
            "name": "coredns-7745f9f87f-" + suffix(name, "web"),
            "labels": {"k8s-app": "kube-dns"},
            "workload": "coredns",
        }
    else:
        pod = {
            "ns": "default",
            "name": "web-6d8f7c9b5d-" + suffix(name, "web"),
            "labels": {"app": "web"},
            "workload": "web",
        }
        if name in cfg.get("fail_drain", []):
            pod["labels"] = {"app": "web", "mko.lab/pdb": "blocked"}
    pod.update(node=name, owner="ReplicaSet", claims=[])
    return [*pods, pod]


def all_pods(state: State, now: float) -> list[Obj]:
    """Every pod: {ns, name, labels, node, owner kind, workload, claims}.

    The per-node pods, then the configured workloads' replicas, placed on schedulable nodes (workers
    first) unless a failed eviction pinned them to their node.
    """
    pods: list[Obj] = []
    cfg = config(state)
    pinned = state.setdefault("pinned", {})
    for name in known_nodes(state):
        node = node_of(state, name)
        if node["powered"] and node["running"]:
            pods += _node_pods(state, name)
    places = schedulable(state, now)
    for w in cfg.get("workloads", []):
        for index in range(replicas_of(state, w)):
            name = pod_name(w, index)
            where = pinned.get(f"{w['ns']}/{name}")
            if where is None:
                if not places:
                    continue
                where = places[(index + len(w["name"])) % len(places)]
            claims = [c["name"] for c in w.get("volumes", [])]
            claims += [f"{c['name']}-{w['name']}-{index}" for c in w.get("claim_templates", [])]
            pods.append(
                {
                    "ns": w["ns"],
                    "name": name,
                    "labels": dict(w.get("labels", {})),
                    "node": where,
                    "owner": "ReplicaSet" if w["kind"] == "Deployment" else "StatefulSet",
                    "workload": w["name"],
                    "claims": claims,
                }
            )
    return pods


def _selects(selector: dict[str, str], pod: Obj) -> bool:
    return all(pod["labels"].get(k) == v for k, v in selector.items())


def pdbs(state: State, now: float) -> list[Obj]:
    """PodDisruptionBudgets (policy/v1), disruptionsAllowed worked out from the healthy pods they match."""
    cfg = config(state)
    found = [dict(p) for p in cfg.get("pdbs", [])]
    if cfg.get("fail_drain"):
        found.append(
            {
                "ns": "default",
                "name": "web-pdb",
                "selector": {"mko.lab/pdb": "blocked"},
                "minAvailable": len(cfg["fail_drain"]),
            }
        )
    pods = all_pods(state, now)
    for pdb in found:
        matched = [p for p in pods if p["ns"] == pdb["ns"] and _selects(pdb["selector"], p)]
        healthy = sum(1 for p in matched if is_ready(state, p["node"], now))
        if "minAvailable" in pdb:
            desired = int(pdb["minAvailable"])
        else:
            desired = max(0, len(matched) - int(pdb.get("maxUnavailable", 1)))
        pdb.update(healthy=healthy, expected=len(matched), desired=desired, allowed=max(0, healthy - desired))
    return found


def blocking_pdb(state: State, now: float, pod: Obj) -> Obj | None:
    """The budget that refuses POD's eviction now, if any."""
    for pdb in pdbs(state, now):
        if pdb["ns"] == pod["ns"] and _selects(pdb["selector"], pod) and pdb["allowed"] <= 0:
            return pdb
    return None


def pvcs(state: State) -> list[tuple[str, str, str]]:
    """(namespace, claim, storage class) of every PersistentVolumeClaim."""
    found = []
    for w in config(state).get("workloads", []):
        for claim in w.get("volumes", []):
            found.append((w["ns"], claim["name"], claim.get("storageClass", "microk8s-hostpath")))
        for claim in w.get("claim_templates", []):
            for index in range(int(w.get("replicas", 1))):
                found.append(
                    (
                        w["ns"],
                        f"{claim['name']}-{w['name']}-{index}",
                        claim.get("storageClass", "microk8s-hostpath"),
                    )
                )
    return found


def volume_states(state: State, now: float) -> list[Obj]:
    """Longhorn volumes: attached while a pod using their claim runs, then detaching, then detached.

    Detaching lasts ``detach_delay`` seconds (per volume: ``detach_delay`` in its entry), or forever
    when ``stuck``.
    """
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


# ----------------------------------------------------------------------------- API objects


def iso_obj(kind: str, ns: str | None, name: str, extra: Obj) -> Obj:
    """An API object with kubectl's metadata; EXTRA's ``metadata`` is merged, its other keys added."""
    meta: Obj = {
        "name": name,
        "uid": f"{suffix(name, 'uid', 8)}-{suffix(name, 'u2', 4)}",
        "resourceVersion": "1",
        "creationTimestamp": "2026-11-25T09:14:21Z",
    }
    if ns is not None:
        meta["namespace"] = ns
    item: Obj = {"apiVersion": "v1", "kind": kind, "metadata": meta}
    for key, value in extra.items():
        if key == "metadata":
            meta.update(value)
        else:
            item[key] = value
    return item


def pod_item(pod: Obj) -> Obj:
    """A Pod as ``kubectl get pod -o json`` shows it."""
    owner = pod["workload"] if pod["owner"] != "ReplicaSet" else pod["name"].rsplit("-", 1)[0]
    volumes = [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in pod["claims"]]
    reference = {
        "apiVersion": "apps/v1",
        "kind": pod["owner"],
        "name": owner,
        "controller": True,
        "blockOwnerDeletion": True,
        "uid": suffix(owner, "owner", 8),
    }
    return iso_obj(
        "Pod",
        pod["ns"],
        pod["name"],
        {
            "metadata": {"labels": pod["labels"], "ownerReferences": [reference]},
            "spec": {
                "nodeName": pod["node"],
                "volumes": volumes,
                "containers": [{"name": pod["workload"], "image": "registry.k8s.io/pause:3.9"}],
            },
            "status": {"phase": "Running"},
        },
    )


def workload_item(state: State, w: Obj) -> Obj:
    """A Deployment or StatefulSet (apps/v1) with its replicas as scaled."""
    replicas = replicas_of(state, w)
    volumes = [
        {"name": c["name"], "persistentVolumeClaim": {"claimName": c["name"]}} for c in w.get("volumes", [])
    ]
    spec: Obj = {
        "replicas": replicas,
        "selector": {"matchLabels": dict(w.get("labels", {}))},
        "template": {
            "metadata": {"labels": dict(w.get("labels", {}))},
            "spec": {
                "containers": [{"name": w["name"], "image": "registry.k8s.io/pause:3.9"}],
                "volumes": volumes,
            },
        },
    }
    if w["kind"] == "StatefulSet":
        spec["serviceName"] = w["name"]
        spec["volumeClaimTemplates"] = [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": c["name"]},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": c.get("storageClass", "microk8s-hostpath"),
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            for c in w.get("claim_templates", [])
        ]
    annotations = state.setdefault("annotations", {}).get(workload_key(w), {})
    status = {
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "observedGeneration": 1,
    }
    item = iso_obj(
        w["kind"],
        w["ns"],
        w["name"],
        {
            "metadata": {"labels": dict(w.get("labels", {})), "annotations": annotations, "generation": 1},
            "spec": spec,
            "status": status,
        },
    )
    item["apiVersion"] = "apps/v1"
    return item


def pdb_item(pdb: Obj) -> Obj:
    """A PodDisruptionBudget (policy/v1) with its status."""
    spec: Obj = {"selector": {"matchLabels": pdb["selector"]}}
    if "minAvailable" in pdb:
        spec["minAvailable"] = pdb["minAvailable"]
    else:
        spec["maxUnavailable"] = pdb.get("maxUnavailable", 1)
    allowed = pdb["allowed"]
    condition = {
        "type": "DisruptionAllowed",
        "status": "True" if allowed else "False",
        "reason": "SufficientPods" if allowed else "InsufficientPods",
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-11-25T09:14:21Z",
    }
    status = {
        "currentHealthy": pdb["healthy"],
        "desiredHealthy": pdb["desired"],
        "disruptionsAllowed": allowed,
        "expectedPods": pdb["expected"],
        "observedGeneration": 1,
        "conditions": [condition],
    }
    item = iso_obj("PodDisruptionBudget", pdb["ns"], pdb["name"], {"spec": spec, "status": status})
    item["apiVersion"] = "policy/v1"
    return item


def volume_item(volume: Obj) -> Obj:
    """A Longhorn volume (longhorn.io/v1beta2)."""
    ns, claim = volume["pvc"].split("/", 1)
    spec = {"nodeID": volume["current"], "numberOfReplicas": 3, "dataEngine": "v1", "size": "1073741824"}
    status = {
        "state": volume["state"],
        "currentNodeID": volume["current"],
        "robustness": "healthy" if volume["state"] == "attached" else "unknown",
        "kubernetesStatus": {
            "namespace": ns,
            "pvcName": claim,
            "pvName": volume["name"],
            "workloadsStatus": [],
        },
    }
    item = iso_obj("Volume", "longhorn-system", volume["name"], {"spec": spec, "status": status})
    item["apiVersion"] = "longhorn.io/v1beta2"
    return item


def as_list(items: list[Obj]) -> Obj:
    """kubectl's List of several objects."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def _pvc_item(ns: str, name: str, storage_class: str) -> Obj:
    spec = {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": storage_class,
        "volumeName": "pvc-" + suffix(ns + name, "pv", 8),
        "resources": {"requests": {"storage": "1Gi"}},
    }
    return iso_obj("PersistentVolumeClaim", ns, name, {"spec": spec, "status": {"phase": "Bound"}})


# ----------------------------------------------------------------------------- kubectl get (objects)


def _labelled(wanted: list[str], labels: dict[str, str]) -> bool:
    for term in wanted:
        key, eq, value = term.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def _pods_of(
    pods: list[Obj], wanted: list[str], in_ns: Callable[[str], bool], field: str | None, names: list[str]
) -> Obj | list[Obj]:
    # `get pods`: the chosen pods, or the one pod asked for by name (printed alone, not as a List).
    chosen = [p for p in pods if in_ns(p["ns"]) and _labelled(wanted, p["labels"])]
    if field:
        key, _, value = field.partition("=")
        if key != "spec.nodeName":
            fail(
                'Error from server (BadRequest): Unable to find "/v1, Resource=pods" that match label '
                f'selector "", field selector "{field}": field label not supported: {key}',
                1,
            )
        chosen = [p for p in chosen if p["node"] == value]
    if names:
        found = [p for p in chosen if p["name"] in names]
        if len(found) < len(names):
            missing = [n for n in names if n not in {p["name"] for p in found}]
            fail(f'Error from server (NotFound): pods "{missing[0]}" not found', 1)
        if len(names) == 1:
            return pod_item(found[0])
        chosen = found
    return [pod_item(p) for p in chosen]


_GET_OPTIONS = {
    "-o": "output",
    "--output": "output",
    "-n": "namespace",
    "--namespace": "namespace",
    "--field-selector": "field",
    "-l": "selector",
    "--selector": "selector",
}


def _get_flags(rest: list[str]) -> tuple[dict[str, str | None], bool, list[str]]:
    # kubectl get's options (by _GET_OPTIONS' names), --all-namespaces, and the words: kind and names.
    options: dict[str, str | None] = {}
    all_ns = False
    words = []
    while rest:
        item = rest.pop(0)
        if item in _GET_OPTIONS:
            options[_GET_OPTIONS[item]] = rest.pop(0) if rest else None
        elif item in ("-A", "--all-namespaces"):
            all_ns = True
        elif item.startswith("-"):
            fail(f"error: unknown flag: {item.split('=')[0]}\nSee 'kubectl get --help' for usage.", 1)
        else:
            words.append(item)
    if not words:
        fail(
            'You must specify the type of resource to get. Use "kubectl api-resources" for a complete '
            "list of supported resources.\n\nerror: Required resource not specified.",
            1,
        )
    return options, all_ns, words


def get_objects(ctx: Context, rest: list[str]) -> None:
    """kubectl get for what mko reads as JSON: pods, pod, pdb, deploy,sts, pvc, crd, Longhorn volumes."""
    options, all_ns, words = _get_flags(rest)
    output, namespace, field, selector = (
        options.get(k) for k in ("output", "namespace", "field", "selector")
    )
    kind, names = words[0], words[1:]
    now = time.time()
    with Cluster(ctx.lab) as state:
        error = api_error(ctx, state, now, "get " + kind.split(".")[0])
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

    def in_ns(ns: str) -> bool:
        return all_ns or ns == (namespace or "default")

    items: list[Obj]
    if kind in ("pods", "pod", "po"):
        chosen = _pods_of(pods, wanted, in_ns, field, names)
        if isinstance(chosen, dict):
            print(json.dumps(chosen, indent=4))
            return
        items = chosen
    elif kind in ("pdb", "poddisruptionbudgets", "poddisruptionbudget"):
        items = [pdb_item(p) for p in budgets if in_ns(p["ns"])]
    elif kind in ("deploy,sts", "deployments,statefulsets", "sts,deploy"):
        items = [
            w
            for w in workloads
            if in_ns(w["metadata"]["namespace"]) and _labelled(wanted, w["metadata"]["labels"])
        ]
    elif kind in ("pvc", "persistentvolumeclaims"):
        items = [_pvc_item(ns, name, storage_class) for ns, name, storage_class in claims if in_ns(ns)]
    elif kind in ("crd", "customresourcedefinitions") and names == ["volumes.longhorn.io"]:
        if not longhorn:
            fail(
                "Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io "
                '"volumes.longhorn.io" not found',
                1,
            )
        print("NAME                  CREATED AT\nvolumes.longhorn.io   2024-05-02T09:14:21Z")
        return
    elif kind in ("volumes.longhorn.io", "volumes", "lhv"):
        if not longhorn:
            fail(f'error: the server doesn\'t have a resource type "{kind.split(".")[0]}"', 1)
        items = [volume_item(v) for v in volumes if in_ns("longhorn-system")]
    else:
        fail(f"mko lab microk8s stand-in: unsupported kubectl get: {' '.join(words)}", 64)
    if output != "json":
        fail(f"mko lab microk8s stand-in: kubectl get {kind} is only simulated with -o json", 64)
    print(json.dumps(as_list(items), indent=4))


def scale(ctx: Context, rest: list[str]) -> None:
    """kubectl scale {deployment|statefulset}/NAME --replicas=N [--current-replicas=M] -n NS."""
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
            fail(f"error: unknown flag: {item.split('=')[0]}\nSee 'kubectl scale --help' for usage.", 1)
        else:
            target = item
    if replicas is None:
        fail('error: required flag(s) "replicas" not set', 1)
    resource, _, name = (target or "").partition("/")
    kinds = {
        "deployment": "Deployment",
        "deploy": "Deployment",
        "statefulset": "StatefulSet",
        "sts": "StatefulSet",
    }
    if resource not in kinds or not name:
        fail(f'error: the server doesn\'t have a resource type "{resource}"', 1)
    now = time.time()
    was = None
    with Cluster(ctx.lab) as state:
        error = api_error(ctx, state, now, "patch " + resource + "s")
        w = [
            w
            for w in config(state).get("workloads", [])
            if w["ns"] == namespace and w["name"] == name and w["kind"] == kinds[resource]
        ]
        was = replicas_of(state, w[0]) if w else None
        if not error and w and (current is None or current == was):
            state["scale"][workload_key(w[0])] = replicas
    if error:
        fail(error, 1)
    if not w:
        fail(f'Error from server (NotFound): {resource}s.apps "{name}" not found', 1)
    if current is not None and current != was:
        fail(f"error: Expected replicas to be {current}, was {was}", 1)
    print(f"{kinds[resource].lower()}.apps/{name} scaled")


# ----------------------------------------------------------------------------- kubectl: nodes


def _node_conditions(status: str, reason: str, message: str, now: float, since: str) -> list[Obj]:
    pressure = "Unknown" if status == "Unknown" else "False"
    conditions: list[Obj] = [
        {
            "type": kind,
            "status": pressure,
            "reason": "KubeletHasSufficient" + word if pressure == "False" else "NodeStatusUnknown",
            "message": f"kubelet has sufficient {word.lower()} available"
            if pressure == "False"
            else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": iso(now),
            "lastTransitionTime": since,
        }
        for kind, word in (("MemoryPressure", "Memory"), ("DiskPressure", "Disk"), ("PIDPressure", "PID"))
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": iso(now),
            "lastTransitionTime": since,
        }
    )
    return conditions


def node_item(ctx: Context, state: State, name: str, now: float) -> Obj:
    """A Node as ``kubectl get node -o json`` shows it: Ready, NotReady while booting, else Unknown."""
    node = state["nodes"].get(name) or default_node()
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
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "microk8s.io/cluster": "true",
    }
    if control:
        labels["node.kubernetes.io/microk8s-controlplane"] = "microk8s-controlplane"
    else:
        labels["node.kubernetes.io/microk8s-worker"] = "microk8s-worker"
    spec: Obj = {"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.1.0.0/24"]}
    taints = []
    if node["cordoned"]:
        spec["unschedulable"] = True
        taints.append(
            {
                "effect": "NoSchedule",
                "key": "node.kubernetes.io/unschedulable",
                "timeAdded": iso(node.get("cordoned_at") or now),
            }
        )
    if status == "Unknown":
        taints += [
            {"effect": "NoSchedule", "key": "node.kubernetes.io/unreachable", "timeAdded": since},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "timeAdded": since},
        ]
    if taints:
        spec["taints"] = taints
    try:
        address = ctx.resolve(name)
    except OSError:
        address = "127.0.0.1"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "creationTimestamp": iso(created),
            "resourceVersion": str(int(now * 1000) % 10000000),
            "uid": f"{suffix(name, 'uid')}-{suffix(name, 'uid2')}",
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "conditions": _node_conditions(status, reason, message, now, since),
            "nodeInfo": {
                "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.6.28",
                "kernelVersion": "6.1.0-18-amd64",
                "kubeProxyVersion": "v1.29.4",
                "kubeletVersion": "v1.29.4",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
            },
        },
    }


def _get_nodes_flags(rest: list[str]) -> tuple[str | None, list[str]]:
    output = None
    names = []
    while rest:
        item = rest.pop(0)
        if item in ("-o", "--output"):
            output = rest.pop(0) if rest else fail("error: flag needs an argument: 'o' in -o", 1)
        elif item.startswith(("--output=", "-o=")):
            output = item.split("=", 1)[1]
        elif item.startswith("-o") and len(item) > 2:
            output = item[2:]
        elif item.startswith("-"):
            fail(f"error: unknown flag: {item}", 1)
        else:
            names.append(item)
    return output, names


def get_nodes(ctx: Context, rest: list[str]) -> None:
    """``kubectl get nodes [NAME…] [-o json|wide]``."""
    output, names = _get_nodes_flags(rest)
    now = time.time()
    with Cluster(ctx.lab) as state:
        error = api_error(ctx, state, now)
        known = known_nodes(state)
        missing = [n for n in names if n not in known]
        items = [node_item(ctx, state, n, now) for n in (names or known) if n in known]
    if error:
        fail(error, 1)
    if missing:
        fail("\n".join(f'Error from server (NotFound): nodes "{n}" not found' for n in missing), 1)
    if output == "json":
        document = as_list(items) if not names or len(names) > 1 else items[0]
        print(json.dumps(document, indent=4))
        return
    if output not in (None, "wide"):
        fail(f'error: unable to match a printer suitable for the output format "{output}"', 1)
    rows = [("NAME", "STATUS", "ROLES", "AGE", "VERSION")]
    for node in items:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"]
        words = "Ready" if ready == "True" else "NotReady"
        if node["spec"].get("unschedulable"):
            words += ",SchedulingDisabled"
        rows.append((node["metadata"]["name"], words, "<none>", "12d", "v1.29.4"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cordon(ctx: Context, rest: list[str], on: bool) -> None:
    """``kubectl cordon|uncordon NODE``."""
    names = [a for a in rest if not a.startswith("-")]
    if len(names) != 1:
        fail(f"error: USAGE: {'cordon' if on else 'uncordon'} NODE [flags]", 1)
    name = names[0]
    now = time.time()
    was = None
    with Cluster(ctx.lab) as state:
        error = api_error(ctx, state, now)
        if not error and name in known_nodes(state):
            node = node_of(state, name)
            was = node["cordoned"]
            node["cordoned"], node["cordoned_at"] = on, now
            if not on and name in state.setdefault("drained", []):
                state["drained"].remove(name)  # schedulable again: its pods may come back
    if error:
        fail(error, 1)
    if name not in known_nodes(state):
        fail(f'Error from server (NotFound): nodes "{name}" not found', 1)
    word = "cordoned" if on else "uncordoned"
    print(f"node/{name} {'already ' if was == on else ''}{word}")


_DRAIN_FLAGS = (
    "--ignore-daemonsets",
    "--delete-emptydir-data",
    "--timeout",
    "--force",
    "--grace-period",
    "--disable-eviction",
)


_DAEMONSETS = "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"


def _drain_flags(rest: list[str]) -> tuple[str, list[str], float]:
    # The node, the flags and --timeout in seconds (0: for ever).
    flags = [a for a in rest if a.startswith("-")]
    names = [a for a in rest if not a.startswith("-")]
    if len(names) != 1:
        fail("error: USAGE: drain NODE [flags]\nSee 'kubectl drain -h' for help and examples", 1)
    name = names[0]
    timeout_text = "0s"
    for flag in flags:
        key = flag.split("=", 1)[0]
        if key not in _DRAIN_FLAGS:
            fail(f"Error: unknown flag: {key}\nSee 'kubectl drain --help' for usage.", 1)
        if key == "--timeout":
            timeout_text = flag.split("=", 1)[1] if "=" in flag else "0s"
    return name, flags, parse_duration(timeout_text)


def drain(ctx: Context, rest: list[str]) -> None:
    """kubectl 1.29 drain.go: cordon, then evict (or, with --disable-eviction, delete) every pod.

    DaemonSet-managed pods are left alone; an eviction a PodDisruptionBudget refuses (429) is retried
    every 5 s (``retry_delay`` in the lab) until --timeout ("0s": for ever), then the error tail below,
    exit 1.
    """
    name, flags, timeout = _drain_flags(rest)
    evict = "--disable-eviction" not in flags
    now = time.time()
    pods: list[Obj] = []
    blocked: set[str] = set()
    was, pause, retry = False, 0.0, 5.0
    with Cluster(ctx.lab) as state:
        error = api_error(ctx, state, now, "get nodes")
        known = name in known_nodes(state)
        if not error and known:
            pods = [p for p in all_pods(state, now) if p["node"] == name]
            blocked = {
                p["name"]
                for p in pods
                if p["owner"] != "DaemonSet" and evict and blocking_pdb(state, now, p) is not None
            }
            node = node_of(state, name)
            was = node["cordoned"]
            node["cordoned"], node["cordoned_at"] = True, now
            pause = delay(state, "drain", name or ctx.host)
            retry = float(config(state).get("retry_delay", 5.0))
    if error:
        fail(error, 1)
    if not known:
        fail(f'Error from server (NotFound): nodes "{name}" not found', 1)
    print(f"node/{name} {'already ' if was else ''}cordoned")
    sys.stdout.flush()
    daemons = ", ".join(f"{p['ns']}/{p['name']}" for p in pods if p["owner"] == "DaemonSet")
    if "--ignore-daemonsets" not in flags:
        fail(
            f'error: unable to drain node "{name}" due to error: {_DAEMONSETS}: {daemons}, continuing '
            f"command...\nThere are pending nodes to be drained:\n {name}\n{_DAEMONSETS}: {daemons}",
            1,
        )
    sys.stderr.write("Warning: ignoring DaemonSet-managed Pods: " + daemons + "\n")
    sys.stderr.flush()
    workloads = [p for p in pods if p["owner"] != "DaemonSet"]
    if evict:
        for pod in workloads:
            print(f"evicting pod {pod['ns']}/{pod['name']}")
    sys.stdout.flush()
    time.sleep(pause)
    free = [p for p in workloads if p["name"] not in blocked]
    stuck = [p for p in workloads if p["name"] in blocked]
    with Cluster(ctx.lab) as state:
        for pod in free:
            state.setdefault("pinned", {}).pop(f"{pod['ns']}/{pod['name']}", None)
        if not stuck and name not in state.setdefault("drained", []):
            state["drained"].append(name)
    for pod in free:
        print(f"pod/{pod['name']} {'evicted' if evict else 'deleted'}")
    sys.stdout.flush()
    if not stuck:
        print(f"node/{name} drained")
        return
    _retry_evictions(ctx, name, stuck, timeout, retry)


def _retry_evictions(ctx: Context, name: str, stuck: list[Obj], timeout: float, retry: float) -> None:
    # Refused evictions are retried until the timeout; then the pods stay where they are (pinned).
    deadline = time.time() + timeout if timeout else None
    while True:
        for pod in stuck:
            sys.stderr.write(
                f'error when evicting pods/"{pod["name"]}" -n "{pod["ns"]}" (will retry after 5s): Cannot '
                "evict pod as it would violate the pod's disruption budget.\n"
            )
        sys.stderr.flush()
        if deadline is not None and time.time() + retry > deadline:
            time.sleep(max(0.0, deadline - time.time()))
            break
        time.sleep(retry)
        for pod in stuck:
            print(f"evicting pod {pod['ns']}/{pod['name']}")
        sys.stdout.flush()
    with Cluster(ctx.lab) as state:
        for pod in stuck:
            state.setdefault("pinned", {})[f"{pod['ns']}/{pod['name']}"] = name
    took = go_duration(timeout)
    errors = [
        f'error when evicting pods/"{p["name"]}" -n "{p["ns"]}": global timeout reached: {took}'
        for p in stuck
    ]
    joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    lines = [f'There are pending pods in node "{name}" when an error occurred: {joined}']
    lines += ["pod/" + p["name"] for p in stuck]
    lines.append(f'error: unable to drain node "{name}" due to error: {joined}, continuing command...')
    lines += ["There are pending nodes to be drained:", " " + name]
    lines += errors
    fail("\n".join(lines), 1)


def kubectl(ctx: Context, rest: list[str]) -> None:
    """``microk8s kubectl …``: refused on a node joined with --worker, as the real wrapper does."""
    with Cluster(ctx.lab) as state:
        clustered = worker_only(state, ctx.host)
    if clustered:
        # NOTE: the real wrapper refuses on nodes joined with --worker, and exits 0.
        print(CLUSTERED + " Please use the microk8s.kubectl on the master.")
        return
    if rest[:2] in (["get", "nodes"], ["get", "node"], ["get", "no"]):
        get_nodes(ctx, rest[2:])
    elif rest[:1] == ["drain"]:
        drain(ctx, rest[1:])
    elif rest[:1] in (["cordon"], ["uncordon"]):
        cordon(ctx, rest[1:], rest[0] == "cordon")
    elif rest[:1] == ["get"]:
        get_objects(ctx, rest[1:])
    elif rest[:1] == ["scale"]:
        scale(ctx, rest[1:])
    else:
        fail(f"mko lab microk8s stand-in: unsupported kubectl arguments: {' '.join(rest)}", 64)
