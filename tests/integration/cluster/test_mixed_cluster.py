"""One cluster, every power path: shut down in order and brought back, each node by its own method.

Six lab nodes run real sshd with the lab's MicroK8s stand-ins (mko.lab.microk8s):

* lab-n1  control plane, physical: ``systemctl poweroff`` over SSH, Wake-on-LAN (the drain host);
* lab-n2  control plane, a Proxmox VM: ``microk8s stop`` over SSH, then the PVE API's shutdown
          (fakepve, the wire-level fake of the API), then started again by the API;
* lab-n3  worker, physical, like lab-n1;
* lab-n4  worker behind an IPMI BMC (OpenIPMI's ipmi_sim): chassis soft-off, then power on;
* lab-n5  worker behind a Redfish BMC (sushy-tools): GracefulShutdown, then On;
* lab-n6  worker fed by a Tasmota smart plug (the wire-level fake of support.plugs), which can only cut
          power: ``systemctl poweroff`` over SSH, then the plug off once it halted; on again to wake it.

The fakes serve in the lab's orch namespace, where the orchestrator runs, as on a management network.
A :class:`support.peers.PowerCoupling` plays the machines behind them: when the hypervisor or BMC says a
machine went off (or on), that lab node loses power (or boots). Every "succeeded" power step must say
what confirmed it: the driver's own power query, or SSH going silent after it accepted the power-off.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from mko.lab.harness import RunningLab
from mko.lab.microk8s import Microk8sCluster
from mko.platform.db.models.operations import OperationStatus
from mko.platform.settings import Settings, get_settings
from support.cluster import DRAIN, cluster_up, one_operation, orch_process, stand_in_calls
from support.peers import IpmiSim, PowerCoupling, PveServer, RedfishEmulator
from support.plugs import Tasmota
from support.ups import wait_until

WORKERS = ("lab-n3", "lab-n4", "lab-n5", "lab-n6")
CONFIRMED_BY = {
    "lab-n1": "SSH stopped answering",
    "lab-n2": "proxmox power query",
    "lab-n3": "SSH stopped answering",
    "lab-n4": "ipmi power query",
    "lab-n5": "redfish power query",
    "lab-n6": "SSH stopped answering",  # and then the plug's own report, in the step's power_cut
}


@pytest.fixture
def fast(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings, polling every 0.1 s (the CLI reads the same values from the environment)."""
    monkeypatch.setenv("MKO_PROBE_INTERVAL", "0.1")
    get_settings.cache_clear()
    return get_settings()


class Peers:
    """The hypervisor, the two BMCs and the smart plug, serving in the lab's orch namespace."""

    def __init__(self, directory: Path, orch: str) -> None:
        for name in ("pve", "ipmi", "redfish"):
            (directory / name).mkdir()
        self.pve = PveServer(directory / "pve", netns=orch)
        self.pve.pve.add_vm(102, "lab-n2", status="running")
        self.ipmi = IpmiSim(directory / "ipmi", netns=orch, power="1")
        self.redfish = RedfishEmulator(directory / "redfish", netns=orch, power_state="On")
        self.plug = Tasmota(netns=orch, on=True)

    def redfish_on(self) -> bool | None:
        state = self.redfish.system()["PowerState"]
        return {"On": True, "Off": False}.get(state)

    def stop(self) -> None:
        self.plug.stop()
        self.redfish.stop()
        self.ipmi.stop()
        self.pve.stop()


@pytest.fixture
def mixed(
    fast: Settings, session: Session, lab_factory: Any, tmp_path: Path
) -> Iterator[tuple[RunningLab, Microk8sCluster, Peers]]:
    """Six lab nodes up and Ready (n1, n2 control planes), and the peers in their orch namespace."""
    running, cluster = cluster_up(fast, session, lab_factory, 6, control_planes=2)
    started = Peers(tmp_path, running.lab.orch)
    yield running, cluster, started
    started.stop()


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _configure(running: RunningLab, peers: Peers) -> None:
    """lab-n2 becomes a Proxmox VM, lab-n4 an IPMI node, lab-n5 a Redfish node, lab-n6 a node on a smart
    plug (the CLI an operator uses); secrets go in on stdin."""
    pve, ipmi, redfish = peers.pve, peers.ipmi, peers.redfish
    commands: list[tuple[list[str], str | None]] = [
        (
            ["proxmox", "add", "pve", "--host", "127.0.0.1", "--port", str(pve.port),
             "--token-id", PveServer.TOKEN_ID, "--secret", "-", "--ca-file", pve.cafile],
            PveServer.TOKEN_SECRET,
        ),
        (["wol", "configure", "2", "--virtual", "--proxmox-vm-id", "102", "--proxmox-host-id", "1"], None),
        (
            ["wol", "configure", "4", "--method", "ipmi", "--bmc-address", "127.0.0.1",
             "--bmc-port", str(ipmi.port), "--bmc-username", IpmiSim.USER, "--bmc-password", "-"],
            IpmiSim.PASSWORD,
        ),
        (
            ["wol", "configure", "5", "--method", "redfish", "--redfish-url", redfish.url,
             "--bmc-username", RedfishEmulator.USER, "--bmc-password", "-",
             "--bmc-ca-file", str(redfish.cafile)],
            RedfishEmulator.PASSWORD,
        ),
        (
            ["wol", "configure", "6", "--method", "tasmota", "--tasmota-host", "127.0.0.1",
             "--tasmota-port", str(peers.plug.port)],
            None,
        ),
    ]  # fmt: skip
    for args, secret in commands:
        _ok(orch_process(running, *args, stdin=None if secret is None else secret + "\n"))


def test_a_mixed_cluster_shuts_down_in_order_and_every_node_comes_back_by_its_own_method(
    session: Session, mixed: tuple[RunningLab, Microk8sCluster, Peers]
) -> None:
    running, cluster, fakes = mixed
    _configure(running, fakes)
    n2, n4, n5, n6 = (running.node(name) for name in ("n2", "n4", "n5", "n6"))
    links = [
        (n2, lambda: fakes.pve.status(102) == "running"),
        (n4, lambda: fakes.ipmi.power == "1"),
        (n5, fakes.redfish_on),
        (n6, lambda: fakes.plug.on[0]),
    ]
    with PowerCoupling(links, running.lab.orch) as coupling:
        dry = _ok(orch_process(running, "cluster", "shutdown", "1", "--dry-run"))
        assert dry.stdout.splitlines() == [
            "graceful shutdown of cluster 1 (lab); drain host: lab-n1",
            "note: a drain a PodDisruptionBudget still blocks after 120 s deletes the pods it protects"
            " (kubectl drain --disable-eviction)",
            "1. first, through the drain host lab-n1:",
            "   datastore backup  microk8s dbctl backup on lab-n1, kept on mko's host (last 5; a failed"
            " backup is reported, the shutdown goes on)",
            "   storage quiesce   scale to zero the Deployments and StatefulSets mounting PersistentVolumes"
            " (replicas stored for the recovery)",
            "   longhorn          wait up to 300 s for Longhorn volumes to detach (when Longhorn is"
            " installed)",
            "2. workers, in parallel:",
            "   kubectl drain  lab-n3 (run on lab-n1)",
            "   microk8s stop  lab-n3 (over SSH)",
            "   power off      lab-n3 (systemctl poweroff over SSH)",
            "   kubectl drain  lab-n4 (run on lab-n1)",
            "   microk8s stop  lab-n4 (over SSH)",
            "   power off      lab-n4 (soft-off by the ipmi driver)",
            "   kubectl drain  lab-n5 (run on lab-n1)",
            "   microk8s stop  lab-n5 (over SSH)",
            "   power off      lab-n5 (soft-off by the redfish driver)",
            "   kubectl drain  lab-n6 (run on lab-n1)",
            "   microk8s stop  lab-n6 (over SSH)",
            "   power off      lab-n6 (systemctl poweroff over SSH, then power cut by the tasmota driver)",
            "3. then control plane, alone:",
            "   kubectl drain  lab-n2 (run on lab-n1)",
            "   microk8s stop  lab-n2 (over SSH)",
            "   power off      lab-n2 (soft-off by the proxmox driver)",
            "4. then the drain host, last of all:",
            "   microk8s stop  lab-n1 (over SSH)",
            "   power off      lab-n1 (systemctl poweroff over SSH)",
            "dry run: nothing was done",
        ]

        # ---------------------------------------------------------------- shutdown
        result = _ok(orch_process(running, "cluster", "shutdown", "1", "--yes", "--json"))
        body = json.loads(result.stdout)
        assert (body["status"], body["unconfirmed"], body["failures"]) == ("succeeded", [], [])
        assert sorted(body["powered_off"]) == [f"lab-n{i}" for i in range(1, 7)]
        assert body["powered_off"][-2:] == [
            "lab-n2",
            "lab-n1",
        ]  # control planes last, the drain host at the end
        shutdown = one_operation(session, "cluster_shutdown")
        order = [step.name for step in shutdown.steps]
        worker_steps = [i for i, name in enumerate(order) if name.endswith(WORKERS)]
        assert max(worker_steps) < order.index("drain lab-n2")
        assert order[-5:] == [
            "drain lab-n2",
            "stop lab-n2",
            "poweroff lab-n2",
            "stop lab-n1",
            "poweroff lab-n1",
        ]
        for step in shutdown.steps:
            assert step.status == OperationStatus.SUCCEEDED, (step.name, step.message)
            if step.name.startswith("poweroff "):
                host = step.name.removeprefix("poweroff ")
                assert step.detail["confirmed"] is True, step.message
                assert step.detail["confirmed_by"] == CONFIRMED_BY[host], step.message
                assert step.message.startswith("powered off: "), step.message
        [cut] = [s for s in shutdown.steps if s.name == "poweroff lab-n6"]
        assert cut.detail["power_cut"]["state"] == "off", cut.message  # the plug, after the halt
        assert cut.message.endswith("; power cut by the tasmota driver, which reports it off"), cut.message
        # MicroK8s was stopped on every node before its power went, whichever way the power went.
        calls = stand_in_calls(running)
        for host in ("lab-n2", "lab-n4", "lab-n5"):
            assert (host, "microk8s stop") in calls or (host, "snap stop microk8s --disable") in calls
            assert not any(h == host and c == "systemctl poweroff" for h, c in calls)  # the driver did it
        assert calls[-2:] == [("lab-n1", "microk8s stop"), ("lab-n1", "systemctl poweroff")]
        assert ("lab-n1", f"microk8s kubectl drain lab-n2 {DRAIN}") in calls
        # Each peer was asked the graceful way, and each machine is off.
        assert ("POST", "/api2/json/nodes/pve1/qemu/102/status/shutdown") in fakes.pve.calls()
        assert "set shutdown 1" in fakes.ipmi.requests
        assert fakes.redfish.resets == ["GracefulShutdown"]
        assert (fakes.pve.status(102), fakes.ipmi.power, fakes.plug.on) == ("stopped", "0", [False])
        assert ("lab-n6", "systemctl poweroff") in calls  # halted first, its plug switched off after
        assert fakes.redfish.system()["PowerState"] == "Off"
        wait_until(lambda: all(n.power.state == "off" for n in running.nodes), 10, what="every node off")
        assert sorted(coupling.changes) == [
            ("lab-n2", "off"),
            ("lab-n4", "off"),
            ("lab-n5", "off"),
            ("lab-n6", "off"),
        ]

        # ---------------------------------------------------------------- restore
        for node in running.nodes:
            node.recorder.clear()
        woken = _ok(orch_process(running, "wol", "wake-cluster", "1", "--wait", "--timeout", "60", "--json"))
        wake = json.loads(woken.stdout)
        assert wake["status"] == "succeeded", wake
        how = {n["hostname"]: (n["method"], n["state"], n["verified_by"]) for n in wake["nodes"]}
        assert how == {
            "lab-n1": ("ethernet", "up", "tcp/2222"),
            "lab-n2": ("proxmox", "up", "query"),
            "lab-n3": ("ethernet", "up", "tcp/2222"),
            "lab-n4": ("ipmi", "up", "query"),
            "lab-n5": ("redfish", "up", "query"),
            "lab-n6": ("tasmota", "up", "query"),
        }
        # Control planes first; magic packets only for the machines that wake by them.
        assert [n["hostname"] for n in wake["nodes"]][:2] == ["lab-n1", "lab-n2"]
        assert [n.hostname for n in running.nodes if n.recorder.packets_for(n.mac)] == ["lab-n1", "lab-n3"]
        assert ("POST", "/api2/json/nodes/pve1/qemu/102/status/start") in fakes.pve.calls()
        assert "set power 1" in fakes.ipmi.requests and fakes.redfish.resets[-1] == "On"
        assert "Power On" in fakes.plug.commands and fakes.plug.on == [True]

        before = len(stand_in_calls(running))
        recovered = _ok(orch_process(running, "cluster", "recover", "1", "--timeout", "60", "--json"))
        report = json.loads(recovered.stdout)
        assert report["status"] == "succeeded", report
        assert report["summary"] == "6/6 started, 6/6 Ready, 5 uncordoned"
        assert report["uncordoned"] == ["lab-n2", "lab-n3", "lab-n4", "lab-n5", "lab-n6"]
        after = stand_in_calls(running)[before:]
        starts = [
            i for i, c in enumerate(after) if c[1] in ("microk8s start", "snap start microk8s --enable")
        ]
        polls = [i for i, c in enumerate(after) if c[1] == "microk8s kubectl get nodes -o json"]
        uncordons = [i for i, c in enumerate(after) if "uncordon" in c[1]]
        assert {after[i][0] for i in starts} == {f"lab-n{i}" for i in range(1, 7)}
        # MicroK8s started everywhere, then every node Ready, and only then uncordoned.
        assert max(starts) < min(polls) <= max(polls) < min(uncordons)
        assert all(n["ready"] and not n["cordoned"] for n in cluster.nodes().values())
        assert sorted(coupling.changes[4:]) == [
            ("lab-n2", "on"),
            ("lab-n4", "on"),
            ("lab-n5", "on"),
            ("lab-n6", "on"),
        ]
