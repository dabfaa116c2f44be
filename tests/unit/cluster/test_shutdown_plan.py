"""The order of a cluster shutdown (no network: the plan is pure), and reading kubectl's node list."""

from __future__ import annotations

import json

import pytest

from mko.cluster.options import K8sOptions
from mko.cluster.plan import build_plan
from mko.cluster.recovery import ready_nodes
from mko.platform.db.models.inventory import Node, NodeRole


def _node(node_id: int, hostname: str, role: NodeRole, method: str = "ethernet") -> Node:
    return Node(id=node_id, hostname=hostname, role=role, wol_method=method)


CP, W = NodeRole.CONTROL_PLANE, NodeRole.WORKER
# Ids deliberately out of name order: the plan orders by id, never by listing order.
NODES = [
    _node(5, "w-b", W),
    _node(2, "cp-2", CP),
    _node(7, "cp-3", CP),
    _node(1, "cp-1", CP),
    _node(4, "w-a", W, "proxmox"),
]


def _chains(chains: list[list[object]]) -> list[list[tuple[str, str, str]]]:
    return [[(s.action, s.hostname, s.runs_on) for s in chain] for chain in chains]  # type: ignore[attr-defined]


def test_workers_first_in_parallel_then_control_planes_alone_and_the_drain_host_last() -> None:
    plan = build_plan(9, "prod", NODES, NODES[1], force=False)  # cp-2 answered first
    assert plan.drain_host == "cp-2"
    assert _chains(plan.parallel) == [
        # A node whose driver can soft-off (Proxmox) is powered off by it; others over SSH.
        [("drain", "w-a", "cp-2"), ("stop", "w-a", "w-a"), ("poweroff", "w-a", "driver:proxmox")],
        [("drain", "w-b", "cp-2"), ("stop", "w-b", "w-b"), ("poweroff", "w-b", "w-b")],
    ]
    assert _chains(plan.serial) == [
        [("drain", "cp-1", "cp-2"), ("stop", "cp-1", "cp-1"), ("poweroff", "cp-1", "cp-1")],
        [("drain", "cp-3", "cp-2"), ("stop", "cp-3", "cp-3"), ("poweroff", "cp-3", "cp-3")],
        [("stop", "cp-2", "cp-2"), ("poweroff", "cp-2", "cp-2")],  # nowhere left to drain it to
    ]
    assert plan.hostnames == ["w-a", "w-b", "cp-1", "cp-3", "cp-2"]
    assert plan.lines() == [
        "graceful shutdown of cluster 9 (prod); drain host: cp-2",
        "1. first, through the drain host cp-2:",
        "   datastore backup  microk8s dbctl backup on cp-2, kept on mko's host (last 5; a failed backup"
        " is reported, the shutdown goes on)",
        "   storage quiesce   scale to zero the Deployments and StatefulSets mounting PersistentVolumes"
        " (replicas stored for the recovery)",
        "   longhorn          wait up to 300 s for Longhorn volumes to detach (when Longhorn is installed)",
        "2. workers, in parallel:",
        "   kubectl drain  w-a (run on cp-2)",
        "   microk8s stop  w-a (over SSH)",
        "   power off      w-a (soft-off by the proxmox driver)",
        "   kubectl drain  w-b (run on cp-2)",
        "   microk8s stop  w-b (over SSH)",
        "   power off      w-b (systemctl poweroff over SSH)",
        "3. then control plane, alone:",
        "   kubectl drain  cp-1 (run on cp-2)",
        "   microk8s stop  cp-1 (over SSH)",
        "   power off      cp-1 (systemctl poweroff over SSH)",
        "4. then control plane, alone:",
        "   kubectl drain  cp-3 (run on cp-2)",
        "   microk8s stop  cp-3 (over SSH)",
        "   power off      cp-3 (systemctl poweroff over SSH)",
        "5. then the drain host, last of all:",
        "   microk8s stop  cp-2 (over SSH)",
        "   power off      cp-2 (systemctl poweroff over SSH)",
    ]
    assert json.loads(json.dumps(plan.as_dict()))["serial"][-1][0] == {
        "node_id": 2,
        "hostname": "cp-2",
        "action": "stop",
        "runs_on": "cp-2",
        "cut_by": None,
    }


def test_the_plan_shows_the_cluster_options_and_force_skips_the_preparation() -> None:
    plan = build_plan(9, "prod", NODES, NODES[1], force=False)
    plan.options = K8sOptions(
        backup_required=True,
        backup_keep=3,
        quiesce_storage_classes=["longhorn"],
        quiesce_labels=["app.kubernetes.io/part-of=db"],
        detach_timeout=60,
    )
    assert plan.lines()[1:5] == [
        "1. first, through the drain host cp-2:",
        "   datastore backup  microk8s dbctl backup on cp-2, kept on mko's host (last 3; a failed backup"
        " stops the shutdown)",
        "   storage quiesce   scale to zero the Deployments and StatefulSets mounting PersistentVolumes of"
        " StorageClass longhorn labelled app.kubernetes.io/part-of=db (replicas stored for the recovery)",
        "   longhorn          wait up to 60 s for Longhorn volumes to detach (when Longhorn is installed)",
    ]
    plan.options = K8sOptions(backup=False, quiesce=False)
    assert plan.lines()[1] == "1. workers, in parallel:"
    forced = build_plan(9, "prod", NODES, NODES[1], force=True)
    assert not forced.prepares and forced.lines()[1] == "1. workers, in parallel:"


def test_force_and_unreachable_control_planes_plan_no_drains() -> None:
    forced = build_plan(1, "c", NODES, NODES[3], force=True)
    assert forced.lines()[0] == "force shutdown (no drains) of cluster 1 (c); drain host: cp-1"
    actions = [s.action for chain in (*forced.parallel, *forced.serial) for s in chain]
    assert "drain" not in actions and actions.count("stop") == 5
    assert [chain[0].hostname for chain in forced.serial] == ["cp-2", "cp-3", "cp-1"]

    unreachable = build_plan(1, "c", NODES, None, force=False)
    assert unreachable.notes == ["no control plane answers on SSH: nodes cannot be drained, only stopped"]
    assert [chain[0].hostname for chain in unreachable.serial] == ["cp-1", "cp-2", "cp-3"]
    assert all(s.action != "drain" for chain in (*unreachable.parallel, *unreachable.serial) for s in chain)

    workers_only = build_plan(1, "c", [NODES[0]], None, force=False)
    assert workers_only.notes == ["the cluster has no control-plane node in the inventory: nothing can drain"]
    assert workers_only.serial == [] and _chains(workers_only.parallel) == [
        [("stop", "w-b", "w-b"), ("poweroff", "w-b", "w-b")]
    ]


def test_ready_nodes_reads_the_real_kubectl_shape() -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "metadata": {"name": "cp-1"},
                "spec": {"unschedulable": True},
                "status": {
                    "conditions": [
                        {"type": "MemoryPressure", "status": "False"},
                        {"type": "Ready", "status": "True"},
                    ]
                },
            },
            {
                "metadata": {"name": "w-a"},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
            },
        ],
    }
    assert ready_nodes(json.dumps(listing)) == {
        "cp-1": {"ready": True, "unschedulable": True},
        "w-a": {"ready": False, "unschedulable": False},
    }
    with pytest.raises(ValueError, match="not a Kubernetes List"):
        ready_nodes("[]")
    with pytest.raises(json.JSONDecodeError):
        ready_nodes("This MicroK8s deployment is acting as a node in a cluster.")


def test_nodes_others_depend_on_go_down_after_them_in_reverse_dependency_order() -> None:
    from mko.platform.db.models.inventory import NodeDependency

    nas, cache, w1, w2, cp = (
        _node(3, "nas", W),
        _node(6, "cache", W),
        _node(8, "w1", W),
        _node(9, "w2", W),
        _node(1, "cp", CP),
    )
    cache.dependencies = [NodeDependency(node_id=6, depends_on_id=3)]  # the cache mounts the NAS
    w1.dependencies = [NodeDependency(node_id=8, depends_on_id=6)]  # the workers need the cache
    w2.dependencies = [NodeDependency(node_id=9, depends_on_id=3)]
    plan = build_plan(9, "prod", [nas, cache, w1, w2, cp], cp, force=False)
    assert [chain[0].hostname for chain in plan.parallel] == ["w1", "w2"]
    # Then, one by one: the cache (it needs the NAS), the NAS last of the workers, the control plane.
    assert [chain[0].hostname for chain in plan.serial] == ["cache", "nas", "cp"]
    assert any(line.endswith(". then a worker other nodes depend on, alone:") for line in plan.lines())


def test_every_power_method_has_a_way_down_read_from_its_driver() -> None:
    """Soft-off by the driver that can; else the OS halts over SSH, and a driver that can only cut power
    (an outlet, a plug, a webhook, a command) cuts it afterwards, so that its next "on" starts the node."""
    from mko.power.registry import DRIVERS

    nodes = [_node(1, "cp", CP)] + [
        _node(i, f"w-{method}", W, method) for i, method in enumerate(DRIVERS.names(), start=2)
    ]
    plan = build_plan(1, "mixed", nodes, nodes[0], force=False)
    power_off = {s.hostname: s for chain in plan.parallel for s in chain if s.action == "poweroff"}
    assert {host.removeprefix("w-") for host in power_off} == set(DRIVERS.names())
    for method in DRIVERS.names():
        step, driver = power_off[f"w-{method}"], DRIVERS.driver(method)
        if driver.supports("soft"):
            assert (step.runs_on, step.cut_by) == (f"driver:{method}", None)
            assert step.describe().endswith(f"(soft-off by the {method} driver)")
        elif driver.supports("off"):
            assert (step.runs_on, step.cut_by) == (step.hostname, method)
            assert step.describe().endswith(
                f"(systemctl poweroff over SSH, then power cut by the {method} driver)"
            )
        else:  # magic packets cannot switch anything off
            assert (step.runs_on, step.cut_by) == (step.hostname, None)
            assert step.describe().endswith("(systemctl poweroff over SSH)")
    assert power_off["w-shelly"].cut_by == "shelly" and power_off["w-ipmi"].runs_on == "driver:ipmi"
