"""One cluster whose machines need each other: a NAS on a PDU outlet, a Proxmox host woken by Wake-on-LAN
with its two VMs, and two physical workers. They go down in reverse dependency order and come up in
dependency order, each level's power-ons a stagger apart.

Seven lab nodes run sshd and the MicroK8s stand-ins:

* lab-n1  control plane, Wake-on-LAN (the drain host);
* lab-n2  the NAS, on outlet 2 of an APC PDU (snmpsim, a real SNMP agent);
* lab-n3  the Proxmox host (``proxmox_host``): woken by magic packets, its API (fakepve, extended so the
          host really goes away) answers once the machine booted; depends on the NAS (its VM disks);
* lab-n4, lab-n5  workers, Wake-on-LAN, depend on the NAS (their volumes);
* lab-n6, lab-n7  the host's VMs 101 and 102 (``proxmox``): depend on the host without being told.

Levels: 0 = lab-n1, lab-n2; 1 = lab-n3, lab-n4, lab-n5; 2 = lab-n6, lab-n7. The PDU and the fake serve in
the orch namespace, where mko runs; a :class:`power_peers.PowerCoupling` powers the NAS's node from its
outlet and the VMs' nodes from their guests' status.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from mko.inventory.nodes import update_node
from mko.inventory.schemas import NodeUpdate
from mko.lab.harness import RunningLab
from mko.lab.microk8s import Microk8sCluster
from mko.platform.settings import Settings
from support.cluster import cluster_up, one_operation, orch_process
from support.peers import HostPveServer, PowerCoupling, PveServer
from support.snmp import SnmpSim
from support.ups import wait_until

STAGGER = 0.5
NAS_OUTLET = 2
LEVELS = [["lab-n1", "lab-n2"], ["lab-n3", "lab-n4", "lab-n5"], ["lab-n6", "lab-n7"]]


class Rack:
    """The lab, its PDU and its Proxmox host, and the couplings that make the machines follow them."""

    def __init__(self, running: RunningLab, cluster: Microk8sCluster, directory: Path) -> None:
        self.running, self.cluster = running, cluster
        orch = running.lab.orch
        (directory / "snmp").mkdir()
        self.pdu = SnmpSim(directory / "snmp", netns=orch, initial="on")
        host = running.node("n3")
        self.pve = HostPveServer(
            directory, lambda: host.power.is_on, host.power.power_off, netns=orch, boot_delay=0.3
        )
        self.pve.pve.add_vm(101, "lab-n6", status="running")
        self.pve.pve.add_vm(102, "lab-n7", status="running")
        nas, vm1, vm2 = (running.node(name) for name in ("n2", "n6", "n7"))
        links = [
            (nas, lambda: self.pdu.apc_outlet_on(NAS_OUTLET)),
            (vm1, lambda: self.pve.status(101) == "running"),
            (vm2, lambda: self.pve.status(102) == "running"),
        ]
        self.coupling = PowerCoupling(links, orch).__enter__()

    def first_packet(self, name: str) -> float:
        """When the node's card received its first magic packet."""
        node = self.running.node(name)
        assert node.recorder.wait_for(1, timeout=10, mac=node.mac)
        return min(p.time for p in node.recorder.packets_for(node.mac))

    def stop(self) -> None:
        self.coupling.__exit__()
        self.pve.stop()
        self.pdu.stop()


@pytest.fixture
def rack(fast: Settings, session: Session, lab_factory: Any, tmp_path: Path) -> Iterator[Rack]:
    running, cluster = cluster_up(fast, session, lab_factory, 7, control_planes=1)
    started = Rack(running, cluster, tmp_path)
    yield started
    started.stop()


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _configure(session: Session, rack: Rack) -> None:
    """The PDU outlet, the host and its VMs, the dependencies and the cluster's stagger."""
    pve = rack.pve
    _ok(
        orch_process(
            rack.running, "proxmox", "add", "pve", "--host", "127.0.0.1", "--port", str(pve.port),
            "--token-id", PveServer.TOKEN_ID, "--secret", "-", "--ca-file", pve.cafile,
            stdin=PveServer.TOKEN_SECRET + "\n",
        )
    )  # fmt: skip
    nas = NodeUpdate(
        wol_method="snmp_pdu", snmp_host="127.0.0.1", snmp_port=rack.pdu.port, snmp_outlet=NAS_OUTLET,
        snmp_profile="apc", snmp_community="apc",
    )  # fmt: skip
    update_node(session, 2, nas)
    host = NodeUpdate(
        wol_method="proxmox_host", proxmox_host_id=1, proxmox_host_node="pve1",
        proxmox_host_power_method="ethernet", depends_on=[2],
    )  # fmt: skip
    update_node(session, 3, host)
    for worker in (4, 5):
        update_node(session, worker, NodeUpdate(depends_on=[2]))
    for node_id, vmid in ((6, 101), (7, 102)):
        vm = NodeUpdate(wol_method="proxmox", is_virtual_node=True, proxmox_vm_id=vmid, proxmox_host_id=1)
        update_node(session, node_id, vm)
    _ok(orch_process(rack.running, "cluster", "update", "1", "--stagger", str(STAGGER)))


def test_a_nas_a_proxmox_host_its_vms_and_workers_go_down_in_reverse_order_and_come_up_in_order(
    session: Session, rack: Rack
) -> None:
    running = rack.running
    _configure(session, rack)
    plan = json.loads(_ok(orch_process(running, "wol", "wake-cluster", "1", "--dry-run", "--json")).stdout)
    assert [[n["hostname"] for n in level["nodes"]] for level in plan["levels"]] == LEVELS
    assert plan["stagger"] == STAGGER

    # ------------------------------------------------------------------ down, in reverse order
    result = _ok(orch_process(running, "cluster", "shutdown", "1", "--yes", "--json"))
    body = json.loads(result.stdout)
    assert (body["status"], body["unconfirmed"], body["failures"]) == ("succeeded", [], []), body
    # Whatever nobody depends on first (workers and VMs, in parallel), then the host, then the NAS it
    # needs, then the control plane.
    off = body["powered_off"]
    assert sorted(off[:4]) == ["lab-n4", "lab-n5", "lab-n6", "lab-n7"] and off[4:] == [
        "lab-n3",
        "lab-n2",
        "lab-n1",
    ]
    steps = {s.name: s for s in one_operation(session, "cluster_shutdown").steps}
    assert steps["poweroff lab-n3"].detail["confirmed_by"] == "proxmox_host power query"
    assert steps["poweroff lab-n6"].detail["confirmed_by"] == "proxmox power query"
    # The NAS's OS halted over SSH, then its outlet was switched off, so that power-on can work again.
    assert steps["poweroff lab-n2"].message.endswith("power cut by the snmp_pdu driver, which reports it off")
    assert rack.pdu.apc_outlet_on(NAS_OUTLET) is False
    # Shut down through its API only (a retry after a slow answer may send the command again).
    assert set(rack.pve.pve.power_log) == {("shutdown", "pve1")} and not rack.pve.powered
    wait_until(lambda: all(n.power.state == "off" for n in running.nodes), 10, what="every node off")
    shutdown_order = [h for h, c in rack.coupling.changes if c == "off"]
    assert shutdown_order.index("lab-n2") > max(
        shutdown_order.index("lab-n6"), shutdown_order.index("lab-n7")
    )

    # ------------------------------------------------------------------ up, level by level
    for node in running.nodes:
        node.recorder.clear()
    woken = _ok(orch_process(running, "wol", "wake-cluster", "1", "--wait", "--timeout", "60", "--json"))
    wake = json.loads(woken.stdout)
    assert wake["status"] == "succeeded", wake
    how = {n["hostname"]: (n["method"], n["state"]) for n in wake["nodes"]}
    assert how == {
        "lab-n1": ("ethernet", "up"),
        "lab-n2": ("snmp_pdu", "up"),
        "lab-n3": ("proxmox_host", "up"),
        "lab-n4": ("ethernet", "up"),
        "lab-n5": ("ethernet", "up"),
        "lab-n6": ("proxmox", "up"),
        "lab-n7": ("proxmox", "up"),
    }
    outcome = {n["hostname"]: n for n in wake["nodes"]}
    sent = {name: rack.first_packet(name) for name in ("n1", "n3", "n4", "n5")}
    # Level 1 only once the NAS is up: its outlet switched on (the PDU says so) and its node answering.
    # Level 1 only once the NAS is up: the PDU applied the outlet's "on" (its own record) before any
    # magic packet of level 1 left, and mko had verified it.
    [(nas_on, _oid, _value)] = [e for e in rack.pdu.sets() if e[1].endswith(f".4.{NAS_OUTLET}") and e[2] == 1]
    assert min(sent["n3"], sent["n4"], sent["n5"]) > nas_on > sent["n1"]
    assert outcome["lab-n3"]["first_sent_after"] >= outcome["lab-n2"]["up_after"]
    # Within level 1, each member no earlier than its slot: the level's start (its dependency up) plus one
    # stagger per member before it (the host first: the lowest id). A member whose driver is slow to send
    # (the host's, under load) may go out after a later slot; the slots themselves never move earlier.
    level_start = outcome["lab-n2"]["up_after"]
    assert outcome["lab-n4"]["first_sent_after"] >= level_start + STAGGER
    assert outcome["lab-n5"]["first_sent_after"] >= level_start + 2 * STAGGER
    # Level 2: the VMs start only after the host's API answers again, one stagger apart.
    requests = [(method, path) for method, path, _body in rack.pve.pve.requests]
    booted = len(requests) - requests[::-1].index(("BOOT", ""))
    starts = [i for i, r in enumerate(requests) if r[1].endswith("/status/start")]
    assert len(starts) == 2 and min(starts) >= booted, requests[booted - 1 :]
    assert outcome["lab-n6"]["first_sent_after"] >= outcome["lab-n3"]["up_after"]
    assert outcome["lab-n7"]["first_sent_after"] >= outcome["lab-n6"]["first_sent_after"] + STAGGER
    assert rack.pve.status(101) == rack.pve.status(102) == "running"
    # The VMs' machines follow their guests (the coupling polls): every machine is on.
    wait_until(lambda: all(n.power.is_on for n in running.nodes), 10, what="every machine on")
