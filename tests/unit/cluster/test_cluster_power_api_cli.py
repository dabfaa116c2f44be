"""Cluster shutdown / recovery adapters without a lab: refusals, dry runs, conflicts, input checks.

The shutdown itself runs against real sshd in tests/integration/cluster/test_shutdown_lab.py; here the
nodes sit on loopback addresses where nothing listens, so a plan is made (no control plane answers)
and nothing can be touched.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.operations.records import Actor, start_operation
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.settings import get_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cluster(client: TestClient) -> tuple[int, list[int]]:
    cluster = client.post("/api/clusters", json={"name": "home"}).json()["id"]
    port = _closed_port()
    ids = []
    for index, role in enumerate(("control-plane", "worker")):
        body = {
            "hostname": f"k8s-{index}",
            "ip_address": f"127.0.0.{index + 2}",
            "cluster_id": cluster,
            "role": role,
            "ssh_user": "root",
            "ssh_port": port,
        }
        response = client.post("/api/nodes", json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return cluster, ids


def _operations(session: Session) -> list[Operation]:
    session.expire_all()
    return list(session.scalars(select(Operation)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hostname", "node1; systemctl poweroff"),
        ("hostname", "$(reboot)"),
        ("hostname", "-oProxyCommand=sh"),
        ("hostname", "node1 --all-namespaces"),
        ("ssh_user", "root; reboot"),
        ("ssh_user", "-oProxyCommand=touch"),
        ("ssh_user", "ubuntu`id`"),
        ("ssh_user", "a b"),
    ],
)
def test_shell_injection_in_hostnames_and_users_is_refused_at_input(
    client: TestClient, cli: CliRunner, session: Session, field: str, value: str
) -> None:
    cluster, (node_id, _) = _cluster(client)
    base = {"hostname": "k8s-9", "ip_address": "127.0.0.9", "cluster_id": cluster}
    created = client.post("/api/nodes", json=base | {field: value})
    assert created.status_code == 422 and created.json()["detail"][0]["loc"][-1] == field
    patched = client.patch(f"/api/nodes/{node_id}", json={field: value})
    assert patched.status_code == 422 and patched.json()["detail"][0]["loc"][-1] == field
    # "--" and "--opt=value": the value reaches mko as typed, even when it looks like an option.
    hostname, user = (value, "root") if field == "hostname" else ("k8s-9", value)
    command = ["node", "add", "--cluster-id", str(cluster), f"--ssh-user={user}", "--", hostname, "127.0.0.9"]
    result = cli.invoke(app, command)
    assert result.exit_code == 2, result.stdout
    assert result.stderr.count("\n") == 1 and field in result.stderr
    # Nothing was written: the two nodes of the cluster, unchanged.
    session.expire_all()
    rows = list(session.scalars(select(Node).order_by(Node.id)))
    assert [(n.hostname, n.ssh_user) for n in rows] == [("k8s-0", "root"), ("k8s-1", "root")]


def test_dry_run_over_api_and_cli_plans_without_touching_anything(
    client: TestClient, cli: CliRunner, session: Session
) -> None:
    cluster, _ = _cluster(client)
    response = client.post(f"/api/clusters/{cluster}/shutdown", json={"dry_run": True})
    assert response.status_code == 200, response.text
    plan = response.json()["plan"]
    assert plan["drain_host"] is None
    assert plan["notes"] == ["no control plane answers on SSH: nodes cannot be drained, only stopped"]
    assert [[s["action"] for s in chain] for chain in plan["parallel"] + plan["serial"]] == [
        ["stop", "poweroff"],
        ["stop", "poweroff"],
    ]
    result = cli.invoke(app, ["cluster", "shutdown", str(cluster), "--dry-run"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "graceful shutdown of cluster 1 (home); drain host: —",
        "note: no control plane answers on SSH: nodes cannot be drained, only stopped",
        "1. workers, in parallel:",
        "   microk8s stop  k8s-1 (over SSH)",
        "   power off      k8s-1 (systemctl poweroff over SSH)",
        "2. then control plane, alone:",
        "   microk8s stop  k8s-0 (over SSH)",
        "   power off      k8s-0 (systemctl poweroff over SSH)",
        "dry run: nothing was done",
    ]
    as_json = cli.invoke(app, ["cluster", "shutdown", str(cluster), "--dry-run", "--force", "--json"])
    assert json.loads(as_json.stdout)["lines"][0].startswith("force shutdown (no drains) of cluster 1")
    # Without --yes the CLI shows the plan and asks; "n" records nothing.
    declined = cli.invoke(app, ["cluster", "shutdown", str(cluster)], input="n\n")
    assert declined.exit_code == 1 and "Power off 2 node(s) now?" in declined.stdout
    assert _operations(session) == []


def test_refusals_name_the_problem(client: TestClient, cli: CliRunner, session: Session) -> None:
    missing = client.post("/api/clusters/9/shutdown")
    assert missing.status_code == 404
    empty = client.post("/api/clusters", json={"name": "empty"}).json()["id"]
    assert client.post(f"/api/clusters/{empty}/shutdown").status_code == 409
    assert client.post(f"/api/clusters/{empty}/recover").status_code == 409
    cluster, _ = _cluster(client)
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("shutdown", {"dry_run": True, "drain": False}, "drain"),
        ("shutdown", {"force": "maybe"}, "force"),
        ("recover", {"timeout": 0}, "timeout"),
    ]
    for action, body, field in bad:
        response = client.post(f"/api/clusters/{cluster}/{action}", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == field, response.text
    # One shutdown or recovery of a cluster at a time.
    busy = start_operation(
        session, kind="cluster_shutdown", target_type="cluster", target_id=cluster, actor=Actor("test")
    )
    for action in ("shutdown", "recover"):
        conflict = client.post(f"/api/clusters/{cluster}/{action}", json={})
        assert conflict.status_code == 409
        assert f"operation {busy.id} (cluster_shutdown) is already running" in conflict.json()["detail"]
    refused = cli.invoke(app, ["cluster", "shutdown", str(cluster), "--yes"])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "already running" in refused.stderr
    unknown = cli.invoke(app, ["cluster", "recover", "77"])
    assert unknown.exit_code == 2 and "cluster 77 not found" in unknown.stderr
    assert [op.id for op in _operations(session)] == [busy.id]


def test_a_cluster_holding_a_vm_shuts_down_and_claims_no_power_off_it_could_not_confirm(
    client: TestClient, cli: CliRunner, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing answers here: not the nodes' SSH, not the Proxmox API. The run must still get through
    # every step (no DetachedInstanceError on the VM's Proxmox host) and say "off" for no node.
    cluster, (_, vm) = _cluster(client)
    host = {
        "name": "pve",
        "host": "127.0.0.1",
        "port": _closed_port(),
        "token_id": "mko@pve!t",
        "secret": "s",
    }
    assert client.post("/api/proxmox-hosts", json=host).status_code == 201
    body = {"is_virtual_node": True, "proxmox_vm_id": 101, "proxmox_host_id": 1}
    assert client.put(f"/api/nodes/{vm}/wol/configure", json=body).status_code == 200
    monkeypatch.setenv("MKO_POWEROFF_TIMEOUT", "1")
    get_settings.cache_clear()
    result = cli.invoke(app, ["cluster", "shutdown", str(cluster), "--yes", "--json"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout)
    assert (body["status"], body["powered_off"], body["unconfirmed"]) == ("failed", [], ["k8s-0"])
    assert not any("internal error" in failure for failure in body["failures"])
    [operation] = [op for op in _operations(session) if op.kind == "cluster_shutdown"]
    steps = {step.name: step for step in operation.steps}
    ssh_off, vm_off = steps["poweroff k8s-0"], steps["poweroff k8s-1"]
    assert ssh_off.status == vm_off.status == OperationStatus.FAILED
    assert ssh_off.message.startswith(
        "unconfirmed: SSH did not answer, so mko cannot tell whether it is off ("
    )
    assert ssh_off.detail["confirmed"] is False
    assert vm_off.detail["method"] == "proxmox" and vm_off.message.startswith("failed: ")
    assert vm_off.detail["runs_on"] == "driver:proxmox"
