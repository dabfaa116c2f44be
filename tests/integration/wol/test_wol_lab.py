"""Wake-on-LAN proven by real packets arriving at real (virtual) network cards in namespaces."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from mko.app import create_app
from mko.inventory.nodes import update_node
from mko.inventory.schemas import NodeUpdate, WolConfigure
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import NodeSpec, enter_netns
from mko.operations.records import Actor
from mko.platform.db.models.inventory import Node, NodeRole
from mko.platform.db.models.operations import OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.power.base import OutcomeState
from mko.wol.wake import make_schedule, run_wake, start_wake

ROOT = Path(__file__).resolve().parents[3]


def _wake(settings: Settings, running: RunningLab, target_type: str, target_id: int, **options: Any) -> Any:
    """Run a wake through the service layer with the orchestrator's sockets in the orch namespace."""
    schedule = make_schedule(settings, **options)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with factory() as session:
            prepared = start_wake(
                session, target_type=target_type, target_id=target_id, schedule=schedule, actor=Actor("test")
            )
        with enter_netns(running.lab.orch):
            return asyncio.run(run_wake(factory, settings, prepared))
    finally:
        engine.dispose()


def _configure(session: Session, node: Node, **fields: Any) -> None:
    update_node(session, node.id, WolConfigure(**fields))


def test_udp_to_subnet_broadcast_carries_right_mac_port_and_count(
    settings: Settings, session: Session, lab: RunningLab
) -> None:
    _, nodes = register_lab(session, lab)
    target, other = lab.nodes[1], lab.nodes[0]
    operation = _wake(settings, lab, "node", nodes[1].id, retries=3, delay=0.05)
    assert operation.status == OperationStatus.SUCCEEDED
    assert target.recorder.wait_for(3, timeout=5, mac=target.mac)
    packets = target.recorder.packets_for(target.mac)
    assert len(packets) == 3
    # Default destination: the subnet broadcast computed from the node's IP and prefix length.
    assert {(p.kind, p.ip_dst, p.udp_port, p.frame_dst_mac) for p in packets} == {
        ("udp", lab.lab.broadcast, 9, "ff:ff:ff:ff:ff:ff")
    }
    assert {p.ip_src for p in packets} == {lab.lab.orch_ip}
    assert other.recorder.packets_for(other.mac) == []
    assert not other.power.is_on
    [result] = operation.result["nodes"]
    assert result["state"] == "sent" and result["attempts"] == 3
    assert "not verified" in operation.summary


def test_port_7_and_secureon_six_and_four_bytes(
    settings: Settings, session: Session, lab: RunningLab
) -> None:
    _, nodes = register_lab(session, lab)
    _configure(session, nodes[0], wol_port=7, wol_secureon="01-02-03-04-05-06")
    _configure(session, nodes[1], wol_secureon="192.168.1.2")
    operation = _wake(settings, lab, "cluster", nodes[0].cluster_id or 0, retries=1, delay=0)
    assert operation.status == OperationStatus.SUCCEEDED
    first, second = lab.nodes[0], lab.nodes[1]
    assert first.recorder.wait_for(1, timeout=5, mac=first.mac)
    assert second.recorder.wait_for(1, timeout=5, mac=second.mac)
    [p1] = first.recorder.packets_for(first.mac)
    [p2] = second.recorder.packets_for(second.mac)
    assert (p1.udp_port, p1.secureon) == (7, "01:02:03:04:05:06")
    assert (p2.udp_port, p2.secureon) == (9, "c0:a8:01:02")


def test_limited_broadcast_needs_a_source_interface(
    settings: Settings, session: Session, lab: RunningLab
) -> None:
    _, nodes = register_lab(session, lab)
    node = lab.nodes[2]
    _configure(session, nodes[2], wol_broadcast_address="255.255.255.255")
    # The orch namespace has no default route: without an interface the kernel cannot route it.
    failed = _wake(settings, lab, "node", nodes[2].id, retries=2, delay=0)
    assert failed.status == OperationStatus.FAILED
    [result] = failed.result["nodes"]
    assert result["state"] == "failed" and "unreachable" in result["error"]
    assert node.recorder.packets_for(node.mac) == []
    _configure(session, nodes[2], wol_interface=lab.lab.orch_interface)
    sent = _wake(settings, lab, "node", nodes[2].id, retries=2, delay=0)
    assert sent.status == OperationStatus.SUCCEEDED
    assert node.recorder.wait_for(2, timeout=5, mac=node.mac)
    assert {p.ip_dst for p in node.recorder.packets_for(node.mac)} == {"255.255.255.255"}


def test_raw_ethernet_frame_etherwake_style(settings: Settings, session: Session, lab: RunningLab) -> None:
    _, nodes = register_lab(session, lab)
    node = lab.nodes[0]
    _configure(session, nodes[0], wol_method="ethernet-raw", wol_interface=lab.lab.orch_interface)
    operation = _wake(settings, lab, "node", nodes[0].id, retries=2, delay=0.01)
    assert operation.status == OperationStatus.SUCCEEDED
    assert node.recorder.wait_for(2, timeout=5, mac=node.mac)
    packets = node.recorder.packets_for(node.mac)
    assert {(p.kind, p.frame_dst_mac, p.frame_src_mac, p.ip_dst) for p in packets} == {
        ("ethernet", "ff:ff:ff:ff:ff:ff", lab.lab.orch_mac, None)
    }


def test_cluster_wake_reaches_every_node_control_plane_first(
    settings: Settings, session: Session, lab: RunningLab
) -> None:
    _, nodes = register_lab(session, lab, control_planes=1)
    # Make the control plane the highest id so the order is not just the insertion order.
    update_node(session, nodes[0].id, NodeUpdate(role=NodeRole.WORKER))
    update_node(session, nodes[2].id, NodeUpdate(role=NodeRole.CONTROL_PLANE))
    operation = _wake(settings, lab, "cluster", nodes[0].cluster_id or 0, retries=3, delay=0.05)
    assert operation.status == OperationStatus.SUCCEEDED
    for node in lab.nodes:
        assert node.recorder.wait_for(3, timeout=5, mac=node.mac)
    # Every card sees every broadcast: the first packet on the wire is the control plane's.
    first = lab.nodes[0].recorder.packets[0]
    assert first.target_mac == lab.nodes[2].mac
    assert operation.result["nodes"][0]["hostname"] == nodes[2].hostname


def test_wait_reports_up_only_after_the_packet_arrived_and_the_node_booted(
    settings: Settings, session: Session, lab_factory: Any
) -> None:
    running = lab_factory([NodeSpec(), NodeSpec(), NodeSpec(wakeable=False)], boot_delay=0.5)
    _, nodes = register_lab(session, running)
    started = time.monotonic()
    operation = _wake(
        settings, running, "cluster", nodes[0].cluster_id or 0, retries=3, delay=0.2, wait=True, timeout=3
    )
    assert operation.status == OperationStatus.PARTIAL
    results = {r["hostname"]: r for r in operation.result["nodes"]}
    for lab_node, node in zip(running.nodes[:2], nodes[:2], strict=True):
        result = results[node.hostname]
        assert result["state"] == "up"
        first_packet = lab_node.recorder.packets_for(lab_node.mac)[0].time
        assert lab_node.power.booted_at is not None
        assert first_packet < lab_node.power.booted_at
        # Reported up no earlier than the boot (0.5 s after its packet), measured from the wake's start.
        assert result["up_after"] >= lab_node.power.booted_at - started - 0.05
        assert result["up_after"] >= 0.5
    dead = results[nodes[2].hostname]
    assert dead["state"] == OutcomeState.NOT_UP
    # Re-sent through the timeout: 3 rounds 0.2 s apart, then every probe interval (1 s) until 3 s.
    assert dead["attempts"] >= 4
    assert len(running.nodes[2].recorder.packets_for(running.nodes[2].mac)) == dead["attempts"]
    assert "not up before the timeout" in operation.summary


def test_virtual_node_gets_an_honest_error(settings: Settings, session: Session, lab: RunningLab) -> None:
    _, nodes = register_lab(session, lab)
    _configure(session, nodes[1], is_virtual_node=True, proxmox_vm_id=101)
    operation = _wake(settings, lab, "cluster", nodes[0].cluster_id or 0, retries=1, delay=0)
    assert operation.status == OperationStatus.PARTIAL
    results = {r["hostname"]: r for r in operation.result["nodes"]}
    assert results[nodes[1].hostname]["state"] == "failed"
    assert "has no Proxmox host" in results[nodes[1].hostname]["error"]
    assert results[nodes[0].hostname]["state"] == "sent"


def test_api_wake_paths_in_the_lab(
    settings: Settings, session: Session, lab: RunningLab, admin_token: str
) -> None:
    _, nodes = register_lab(session, lab)
    # The app's event loop thread is started inside the orch namespace and inherits it.
    with enter_netns(lab.lab.orch):
        app = create_app(settings)
        client = TestClient(app, headers={"Authorization": f"Bearer {admin_token}"})
        client.__enter__()
    try:
        response = client.post(f"/api/nodes/{nodes[0].id}/wol/wake", json={"retries": 2, "delay": 0.05})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "succeeded"
        assert lab.nodes[0].recorder.wait_for(2, timeout=5, mac=lab.nodes[0].mac)
        app.state.settings = settings.model_copy(update={"api_sync_wait": 0.0})
        response = client.post(
            f"/api/clusters/{nodes[0].cluster_id}/wol/wake", json={"wait": True, "timeout": 10, "delay": 0.1}
        )
        assert response.status_code == 202, response.text
        url = response.json()["operation_url"]
        assert response.headers["location"] == url
        deadline = time.monotonic() + 15
        while (operation := client.get(url).json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert operation["status"] == "succeeded", operation
        assert all(step["status"] == "succeeded" for step in operation["steps"])
        assert all(node.power.is_on for node in lab.nodes)
        status = client.get(f"/api/nodes/{nodes[0].id}/wol/status", params={"probe": True}).json()
        assert status["last_wake"]["operation_id"] == operation["id"]
        assert status["reachable"]["ok"] is True
    finally:
        client.__exit__(None, None, None)
        app.state.engine.dispose()


def test_seed_cli_in_a_subprocess(settings: Settings, session: Session, lab: RunningLab) -> None:
    cluster, nodes = register_lab(session, lab)
    env = os.environ | {"MKO_DATABASE_URL": settings.database_url, "MKO_LOG_DIR": str(settings.log_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["ip", "netns", "exec", lab.lab.orch, sys.executable, "cli.py", *args]
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    target = lab.nodes[2]
    result = cli("wol", "wake-node", str(nodes[2].id), "--retries", "3", "--delay", "1.0")
    assert result.returncode == 0, result.stderr
    assert target.recorder.wait_for(3, timeout=5, mac=target.mac)
    times = [p.time for p in target.recorder.packets_for(target.mac)]
    assert len(times) == 3
    # Rounds keep to the wake's timeline (round k at k x delay from its start, mko.power.base._round_time):
    # a round a loaded machine sent late does not push the next one, so each packet is checked against
    # its own slot, not against the packet before it.
    assert all(0.9 * k < times[k] - times[0] < k * 1.0 + 0.5 for k in (1, 2)), times
    waited = cli(
        "wol", "wake-cluster", str(cluster.id), "--wait", "--timeout", "10", "--delay", "0.2", "--json"
    )
    assert waited.returncode == 0, waited.stderr
    assert '"status": "succeeded"' in waited.stdout
    assert all(node.power.is_on for node in lab.nodes)
    status = cli("wol", "status", str(nodes[2].id), "--probe", "--json")
    assert '"ok": true' in status.stdout
