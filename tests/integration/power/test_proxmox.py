"""Proxmox VMs woken through the PVE API, against fakepve (an HTTPS fake of the PVE API, verified TLS)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import enter_netns
from mko.operations.records import Actor
from mko.platform.db.models.operations import OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.wol.wake import make_schedule, run_wake, start_wake
from support.peers import PveServer


@pytest.fixture
def pve(tmp_path: Path) -> Iterator[PveServer]:
    """fakepve on 127.0.0.1 with VM 101 (stopped), VM 102 (fails to start), container 201."""
    server = PveServer(tmp_path)
    server.pve.add_vm(101, "k8s-vm1", status="stopped")
    server.pve.add_vm(102, "k8s-vm2", status="stopped").start_error = "storage 'local-lvm' is not online"
    server.pve.add_ct(201, "k8s-ct1", status="stopped")
    yield server
    server.stop()


def _cli(cli: CliRunner, *args: str, stdin: str | None = None) -> Any:
    return cli.invoke(app, list(args), input=stdin)


def _add_host(cli: CliRunner, pve: PveServer, secret: str = PveServer.TOKEN_SECRET) -> None:
    result = _cli(
        cli,
        "proxmox",
        "add",
        "pve",
        "--host",
        "127.0.0.1",
        "--port",
        str(pve.port),
        "--token-id",
        PveServer.TOKEN_ID,
        "--secret",
        "-",
        "--ca-file",
        pve.cafile,
        stdin=secret + "\n",
    )
    assert result.exit_code == 0, result.output


def _vm_node(session: Session, hostname: str, ip: str, cluster_id: int | None = None) -> int:
    return create_node(session, NodeCreate(hostname=hostname, ip_address=ip, cluster_id=cluster_id)).id


def test_seed_form_then_wake_node_starts_the_stopped_vm(
    session: Session, cli: CliRunner, pve: PveServer
) -> None:
    _add_host(cli, pve)
    node_id = _vm_node(session, "k8s-vm1", "10.0.0.101")
    # The seed guide's form, verbatim.
    configured = _cli(
        cli, "wol", "configure", str(node_id), "--virtual", "--proxmox-vm-id", "101", "--proxmox-host-id", "1"
    )
    assert configured.exit_code == 0, configured.output
    assert _cli(cli, "wol", "enable", str(node_id)).exit_code == 0
    assert pve.status(101) == "stopped"

    woken = _cli(cli, "wol", "wake-node", str(node_id), "--json")
    assert woken.exit_code == 0, woken.output
    result = json.loads(woken.stdout)
    assert result["status"] == "succeeded"
    [outcome] = result["nodes"]
    assert (outcome["method"], outcome["state"], outcome["attempts"]) == ("proxmox", "sent", 1)
    assert pve.status(101) == "running"
    # The client found the VM's node, started it and followed the task's UPID to its end.
    calls = pve.calls()
    assert ("GET", "/api2/json/cluster/resources") in calls
    assert ("POST", "/api2/json/nodes/pve1/qemu/101/status/start") in calls
    assert any(m == "GET" and p.startswith("/api2/json/nodes/pve1/tasks/UPID:pve1:") for m, p in calls)
    assert calls.count(("POST", "/api2/json/nodes/pve1/qemu/101/status/start")) == 1  # accepted: not repeated

    status = _cli(cli, "node", "power", str(node_id), "status", "--json")
    assert json.loads(status.stdout)["state"] == "on", status.output
    # Shutdown: ACPI with a timeout after which Proxmox stops it; verified by re-reading status/current.
    off = _cli(cli, "node", "power", str(node_id), "soft", "--json")
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout)["nodes"][0]["state"] == "off"
    assert pve.status(101) == "stopped"
    assert ("POST", "/api2/json/nodes/pve1/qemu/101/status/shutdown") in pve.calls()
    # A waiting wake is verified by Proxmox's own status, not by a TCP probe of the guest.
    waited = _cli(cli, "wol", "wake-node", str(node_id), "--wait", "--timeout", "10", "--json")
    [outcome] = json.loads(waited.stdout)["nodes"]
    assert (outcome["state"], outcome["verified_by"]) == ("up", "query"), waited.output


def test_a_vm_that_fails_to_start_reports_proxmox_error(
    session: Session, client: TestClient, cli: CliRunner, pve: PveServer
) -> None:
    _add_host(cli, pve)
    node_id = _vm_node(session, "k8s-vm2", "10.0.0.102")
    body = {"is_virtual_node": True, "proxmox_vm_id": 102, "proxmox_host_id": 1, "wol_enabled": True}
    assert client.put(f"/api/nodes/{node_id}/wol/configure", json=body).status_code == 200
    response = client.post(f"/api/nodes/{node_id}/wol/wake", json={"retries": 3, "delay": 0})
    assert response.status_code == 200, response.text
    wake_result = response.json()
    assert wake_result["status"] == "failed"
    [outcome] = wake_result["nodes"]
    assert outcome["state"] == "failed"
    assert "storage 'local-lvm' is not online" in outcome["error"]
    assert "could not start VM 102 on pve1" in outcome["error"]
    # A failed task is Proxmox's verdict, not a network hiccup: it is not retried.
    assert pve.calls().count(("POST", "/api2/json/nodes/pve1/qemu/102/status/start")) == 1
    operation = client.get(wake_result["operation_url"]).json()
    assert "storage 'local-lvm' is not online" in operation["steps"][0]["message"]
    assert pve.status(102) == "stopped"
    # The CLI says the same on one line of stderr-free output and exits 1.
    cli_result = _cli(cli, "node", "power", str(node_id), "on")
    assert cli_result.exit_code == 1
    assert "storage 'local-lvm' is not online" in cli_result.stdout


def test_a_bad_token_is_fatal(session: Session, client: TestClient, cli: CliRunner, pve: PveServer) -> None:
    _add_host(cli, pve, secret="not-the-token-secret")
    node_id = _vm_node(session, "k8s-vm1", "10.0.0.101")
    body = {"is_virtual_node": True, "proxmox_vm_id": 101, "proxmox_host_id": 1, "wol_enabled": True}
    assert client.put(f"/api/nodes/{node_id}/wol/configure", json=body).status_code == 200
    before = len(pve.calls())
    wake_result = client.post(f"/api/nodes/{node_id}/wol/wake", json={"retries": 5, "delay": 0}).json()
    [outcome] = wake_result["nodes"]
    assert outcome["state"] == "failed" and outcome["attempts"] == 0
    assert "rejected the credentials (authentication failure): check the API token" in outcome["error"]
    # One request, refused; no retry and no start.
    assert len(pve.calls()) - before == 1
    assert pve.status(101) == "stopped"
    tested = client.post("/api/proxmox-hosts/1/test")
    assert tested.status_code == 502 and "rejected the credentials" in tested.json()["detail"]
    cli_test = _cli(cli, "proxmox", "test", "1")
    assert cli_test.exit_code == 1 and "rejected the credentials" in cli_test.output
    # With the right secret, the same host works.
    assert client.patch("/api/proxmox-hosts/1", json={"secret": PveServer.TOKEN_SECRET}).status_code == 200
    good = client.post("/api/proxmox-hosts/1/test").json()
    assert good["ok"] is True and good["nodes"] == ["pve1"] and good["guests"] == 3


def test_tls_is_verified_and_a_pinned_fingerprint_works(
    session: Session, client: TestClient, pve: PveServer
) -> None:
    base = {"name": "pve", "host": "127.0.0.1", "port": pve.port, "token_id": PveServer.TOKEN_ID}
    created = client.post("/api/proxmox-hosts", json=base | {"secret": PveServer.TOKEN_SECRET})
    assert created.status_code == 201, created.text
    refused = client.post("/api/proxmox-hosts/1/test")
    assert refused.status_code == 502 and "certificate verification failed" in refused.json()["detail"]
    pin = hashlib.sha256(pve.fingerprint).hexdigest()
    assert client.patch("/api/proxmox-hosts/1", json={"fingerprint": pin}).status_code == 200
    assert client.post("/api/proxmox-hosts/1/test").json()["ok"] is True
    wrong = "00" * 32
    assert client.patch("/api/proxmox-hosts/1", json={"fingerprint": wrong}).status_code == 200
    mismatch = client.post("/api/proxmox-hosts/1/test")
    assert mismatch.status_code == 502 and "fingerprint does not match" in mismatch.json()["detail"]


def test_mixed_cluster_woken_in_one_call(
    settings: Settings, session: Session, lab: RunningLab, tmp_path: Path, cli: CliRunner
) -> None:
    # The orchestrator runs in the lab's orch namespace (its packets must leave there); the Proxmox
    # API must be reachable from there too, as on a management network: serve the fake inside it.
    pve = PveServer(tmp_path, netns=lab.lab.orch)
    try:
        pve.pve.add_vm(101, "k8s-vm1", status="stopped")
        pve.pve.add_ct(201, "k8s-ct1", status="stopped")
        _add_host(cli, pve)
        cluster, nodes = register_lab(session, lab)
        for hostname, ip, vmid in (("lab-vm1", "10.213.0.101", 101), ("lab-ct1", "10.213.0.102", 201)):
            node_id = _vm_node(session, hostname, ip, cluster.id)
            configure = ["wol", "configure", str(node_id), "--virtual", "--proxmox-vm-id", str(vmid)]
            assert _cli(cli, *configure, "--proxmox-host-id", "1", "--enable").exit_code == 0
        schedule = make_schedule(settings, retries=2, delay=0.05)
        engine = make_engine(settings.database_url)
        try:
            factory = make_session_factory(engine)
            with factory() as fresh:
                prepared = start_wake(
                    fresh, target_type="cluster", target_id=cluster.id, schedule=schedule, actor=Actor("test")
                )
            with enter_netns(lab.lab.orch):
                operation = asyncio.run(run_wake(factory, settings, prepared))
        finally:
            engine.dispose()
        assert operation.status == OperationStatus.SUCCEEDED, operation.summary
        methods = {r["hostname"]: (r["method"], r["state"], r["attempts"]) for r in operation.result["nodes"]}
        assert methods == {
            **{n.hostname: ("ethernet", "sent", 2) for n in nodes},
            "lab-vm1": ("proxmox", "sent", 1),
            "lab-ct1": ("proxmox", "sent", 1),
        }
        # Packets reached the physical nodes' cards; the API started the VM and the container.
        for lab_node in lab.nodes:
            assert lab_node.recorder.wait_for(2, timeout=5, mac=lab_node.mac)
        assert pve.status(101) == "running" and pve.status(201) == "running"
        assert ("POST", "/api2/json/nodes/pve1/lxc/201/status/start") in pve.calls()
    finally:
        pve.stop()
