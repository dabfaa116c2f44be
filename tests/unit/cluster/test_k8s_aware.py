"""Kubernetes-aware shutdown, pure parts: kubectl drain's eviction errors (captured from real kubectl
1.32.4, whose drain code is 1.28's), PodDisruptionBudget selectors, volume workloads, the recovery's
diagnosis, the backup directory, and the per-cluster settings over the API and the web form."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mko.cluster import backups
from mko.cluster.diagnosis import ControlPlaneView, diagnose, parse_status
from mko.cluster.drains import blocking_budgets, parse_drain, selector_matches
from mko.cluster.options import K8sOptions
from mko.cluster.quiesce import attached_volumes, pv_workloads
from mko.platform.settings import Settings

# kubectl 1.32.4 against a PodDisruptionBudget allowing no disruption, --timeout=12s (stderr, verbatim).
BLOCKED_STDERR = """\
Warning: ignoring DaemonSet-managed Pods: kube-system/calico-node-7xk2p
error when evicting pods/"web-6d8f7c9b5d-q4x7z" -n "default" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
error when evicting pods/"db-0" -n "shop" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.
There are pending pods in node "lab-n2" when an error occurred: [error when evicting pods/"web-6d8f7c9b5d-q4x7z" -n "default": global timeout reached: 12s, error when evicting pods/"db-0" -n "shop": global timeout reached: 12s]
pod/web-6d8f7c9b5d-q4x7z
pod/db-0
error: unable to drain node "lab-n2" due to error: [error when evicting pods/"web-6d8f7c9b5d-q4x7z" -n "default": global timeout reached: 12s, error when evicting pods/"db-0" -n "shop": global timeout reached: 12s], continuing command...
There are pending nodes to be drained:
 lab-n2
error when evicting pods/"web-6d8f7c9b5d-q4x7z" -n "default": global timeout reached: 12s
error when evicting pods/"db-0" -n "shop": global timeout reached: 12s
"""  # noqa: E501


def _pod(ns: str, name: str, labels: dict[str, str]) -> str:
    return json.dumps({"kind": "Pod", "metadata": {"namespace": ns, "name": name, "labels": labels}})


def _pdb(ns: str, name: str, selector: Any, allowed: int, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"selector": selector, **spec},
        "status": {"currentHealthy": 2, "expectedPods": 2, "disruptionsAllowed": allowed},
    }


def test_a_blocked_drain_names_its_pods_and_the_budgets_that_match_them() -> None:
    errors = parse_drain(BLOCKED_STDERR)
    assert errors.by_budget == ["default/web-6d8f7c9b5d-q4x7z", "shop/db-0"]
    assert errors.timed_out
    assert (
        parse_drain("Warning: ignoring DaemonSet-managed Pods: kube-system/calico-node-7xk2p\n").refused == {}
    )

    pods = [_pod("default", "web-6d8f7c9b5d-q4x7z", {"app": "web"}), _pod("shop", "db-0", {"app": "db"})]
    pdbs = {
        "items": [
            _pdb("default", "web-pdb", {"matchLabels": {"app": "web"}}, 0, minAvailable=2),
            _pdb(
                "shop",
                "db-pdb",
                {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]},
                0,
                maxUnavailable=0,
            ),
            _pdb("other", "all", {}, 0, minAvailable=1),  # another namespace: not theirs
            _pdb("default", "none", None, 0, minAvailable=1),  # a null selector matches nothing
        ]
    }
    found = blocking_budgets(pods, json.dumps(pdbs))
    assert [b.describe() for b in found] == [
        "default/web-pdb (minAvailable=2, healthy 2/2, allowed 0) protects default/web-6d8f7c9b5d-q4x7z",
        "shop/db-pdb (maxUnavailable=0, healthy 2/2, allowed 0) protects shop/db-0",
    ]


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {"a": "1"}, True),  # policy/v1: empty selects every pod of the namespace
        (None, {"a": "1"}, False),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, {"a": "2"}, False),
    ],
)
def test_label_selectors_follow_kubernetes(selector: Any, labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


WORKLOADS = {
    "kind": "List",
    "items": [
        {
            "kind": "StatefulSet",
            "metadata": {"namespace": "shop", "name": "db"},
            "spec": {
                "replicas": 2,
                "volumeClaimTemplates": [
                    {"metadata": {"name": "data"}, "spec": {"storageClassName": "longhorn"}}
                ],
            },
        },
        {
            "kind": "Deployment",
            "metadata": {"namespace": "shop", "name": "web"},
            "spec": {
                "template": {
                    "spec": {"volumes": [{"name": "u", "persistentVolumeClaim": {"claimName": "up"}}]}
                }
            },
        },
        {"kind": "Deployment", "metadata": {"namespace": "shop", "name": "cache"}, "spec": {"replicas": 4}},
    ],
}
PVCS = {"items": [{"metadata": {"namespace": "shop", "name": "up"}, "spec": {"storageClassName": "nfs"}}]}


def test_workloads_mounting_volumes_are_found_and_filtered_by_storage_class() -> None:
    found = pv_workloads(json.dumps(WORKLOADS), json.dumps(PVCS), K8sOptions())
    assert [(w.ref, w.replicas, sorted(w.classes)) for w in found] == [
        ("shop/Deployment/web", 1, ["nfs"]),  # replicas omitted: 1
        ("shop/StatefulSet/db", 2, ["longhorn"]),
    ]
    assert found[1].claims == ["data-db-0", "data-db-1"]
    only = pv_workloads(
        json.dumps(WORKLOADS), json.dumps(PVCS), K8sOptions(quiesce_storage_classes=["longhorn"])
    )
    assert [w.ref for w in only] == ["shop/StatefulSet/db"]


def test_longhorn_volumes_still_attached_are_named() -> None:
    volumes = {
        "items": [
            {"metadata": {"name": "pvc-1"}, "status": {"state": "detached", "currentNodeID": ""}},
            {
                "metadata": {"name": "pvc-2"},
                "status": {
                    "state": "detaching",
                    "currentNodeID": "n3",
                    "kubernetesStatus": {"namespace": "shop", "pvcName": "data-db-0"},
                },
            },
        ]
    }
    assert attached_volumes(json.dumps(volumes)) == ["pvc-2 (pvc shop/data-db-0) on n3, state=detaching"]


def test_microk8s_status_is_read_from_its_text() -> None:
    # MicroK8s 1.2x, 4 nodes (a real transcript); exit code 0 whatever it says.
    text = (
        "microk8s is running\nhigh-availability: yes\n"
        "  datastore master nodes: 172.31.128.110:19001 172.31.128.120:19001 172.31.128.130:19001\n"
        "  datastore standby nodes: 172.31.128.100:19001\naddons:\n  enabled:\n"
    )
    assert parse_status(text) == {
        "running": True,
        "first_line": "microk8s is running",
        "high_availability": True,
        "voters": ["172.31.128.110:19001", "172.31.128.120:19001", "172.31.128.130:19001"],
        "standby": ["172.31.128.100:19001"],
    }
    stopped = parse_status("microk8s is not running. Use microk8s inspect for a deeper inspection.\n")
    assert stopped["running"] is False


def test_the_diagnosis_tells_a_crash_loop_from_lost_quorum_and_not_ready_nodes() -> None:
    refused = (
        "The connection to the server 127.0.0.1:16443 was refused - did you specify the right host or port?"
    )
    looping = ControlPlaneView("cp1", True, refused, kubelite={"NRestarts": "17", "SubState": "auto-restart"})
    found = diagnose([looping, ControlPlaneView("cp2", True, None)], ["cp1", "cp2"], ["w1"], None)
    assert found.kind == "nodes_not_ready"  # cp2's API answers: the problem is w1 itself
    crash = diagnose([looping], ["cp1"], ["cp1"], None)
    assert crash.kind == "kubelite_crashloop" and "NRestarts=17 auto-restart" in crash.message
    timeout = "Error from server (Timeout): Timeout: request did not complete within requested timeout"
    quorum = diagnose(
        [ControlPlaneView("cp1", True, timeout), ControlPlaneView("cp2", False, "no answer")],
        ["cp1", "cp2", "cp3"],
        ["cp1", "cp2", "cp3"],
        {"path": "/b/x.tar.gz", "taken_at": "2026-12-07T05:00:00+00:00", "node": "cp1", "keys": 9},
    )
    assert quorum.kind == "quorum_lost"
    assert "1 of 3 voter(s) started (cp1)" in quorum.message
    assert quorum.message.endswith(
        "latest backup: /b/x.tar.gz (taken 2026-12-07T05:00:00+00:00 on cp1, 9 keys)"
    )
    assert diagnose([ControlPlaneView("cp1", False)], ["cp1"], ["cp1"], None).kind == "no_control_plane"


def _archive(keys: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for index in range(keys):
            data = f"/registry/k{index}".encode()
            info = tarfile.TarInfo(f"backup-x/{index}.key")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_backups_are_listed_newest_first_pruned_and_checked(settings: Settings, tmp_path: Path) -> None:
    directory = backups.backup_dir(settings, 7)
    assert directory == tmp_path / "dqlite-backups" / "cluster-7"
    directory.mkdir(parents=True)
    for stamp in ("20261201T000000Z", "20261203T000000Z", "20261202T000000Z"):
        stem = f"backup-{stamp}-op1"
        (directory / f"{stem}.tar.gz").write_bytes(_archive(2))
        record = backups.Backup(
            name=f"{stem}.tar.gz", path=str(directory / f"{stem}.tar.gz"), size=1, keys=2, sha256="x",
            node="cp1", operation_id=1, taken_at=stamp,
        )  # fmt: skip
        (directory / f"{stem}.json").write_text(record.model_dump_json())
    (directory / "backup-20261204T000000Z-op2.json").write_text("{}")  # no archive beside it: left out
    assert [b.taken_at for b in backups.list_backups(settings, 7)] == [
        "20261203T000000Z",
        "20261202T000000Z",
        "20261201T000000Z",
    ]
    # The newest two records stay (the orphan record counts: it is the newest, and goes with the oldest).
    assert backups._prune(directory, 3) == ["backup-20261201T000000Z-op1.tar.gz"]
    assert [b.taken_at for b in backups.list_backups(settings, 7)] == ["20261203T000000Z", "20261202T000000Z"]
    empty = tmp_path / "empty.tar.gz"
    empty.write_bytes(_archive(0))
    assert (backups._check_archive(empty) or ("", ""))[0] == "empty"
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not a tar")
    assert (backups._check_archive(garbage) or ("", ""))[0] == "failed"
    assert backups._check_archive(directory / "backup-20261203T000000Z-op1.tar.gz") is None


HOSTILE = ["a;reboot", "$(id)", "x\ny", "{{ 7*7 }}", "-l", "a" * 254, "a=b,c=d", "a b"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_settings_are_refused_with_the_field_named(client: TestClient, value: str) -> None:
    client.post("/api/clusters", json={"name": "home"})
    for field in ("quiesce_storage_classes", "quiesce_labels"):
        response = client.patch("/api/clusters/1/settings", json={field: [value]})
        assert response.status_code == 422, (field, value, response.text)
        assert field in response.text
    assert client.get("/api/clusters/1/settings").json() == K8sOptions().model_dump()


def test_settings_change_over_the_api_and_the_web_form(client: TestClient, web: Any) -> None:
    client.post("/api/clusters", json={"name": "home"})
    changed = client.patch(
        "/api/clusters/1/settings",
        json={"drain_grace": 30, "quiesce_labels": ["app.kubernetes.io/name=db", "tier"], "backup_keep": 3},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["drain_grace"] == 30 and changed.json()["backup_keep"] == 3
    assert client.patch("/api/clusters/1/settings", json={"backup_keep": 0}).status_code == 422
    assert client.patch("/api/clusters/1/settings", json={"drain_grace": None}).json()["drain_grace"] is None
    assert client.patch("/api/clusters/1/settings", json={"nope": 1}).status_code == 422
    assert client.get("/api/clusters/9/settings").status_code == 404

    form = {
        "backup": "on",
        "backup_keep": "4",
        "backup_timeout": "60",
        "quiesce": "on",
        "quiesce_storage_classes": "longhorn, nfs-client",
        "quiesce_labels": "",
        "detach_timeout": "30",
    }
    saved = web.form("/clusters/1/settings", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    now = client.get("/api/clusters/1/settings").json()
    assert now["quiesce_storage_classes"] == ["longhorn", "nfs-client"] and now["eviction_fallback"] is False
    bad = web.form("/clusters/1/settings", data=form | {"quiesce_storage_classes": "<script>"})
    assert bad.status_code == 422 and "&lt;script&gt;" in bad.text and "<script>" not in bad.text
    assert web.get("/clusters/1").status_code == 200 and web.get("/clusters/1/backups").status_code == 200


def test_a_maintenance_drain_needs_a_control_plane_that_answers(client: TestClient, web: Any) -> None:
    client.post("/api/clusters", json={"name": "home"})
    node = {"hostname": "cp1", "ip_address": "127.0.0.1", "cluster_id": 1, "role": "control-plane"}
    created = client.post("/api/nodes", json=node | {"ssh_port": 9})  # discard: nothing listens
    assert created.status_code == 201, created.text
    refused = client.post("/api/nodes/1/drain")
    assert refused.status_code == 409
    assert "no control plane of cluster 1 answers on SSH (cp1): nothing can drain; wake them" in refused.text
    assert web.form("/nodes/1/drain").status_code == 409
    assert 'action="/nodes/1/drain"' in web.get("/nodes/1").text
    assert client.post("/api/nodes/99/drain").status_code == 404
