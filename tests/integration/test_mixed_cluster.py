"""One cluster, every power path: shut down in order and brought back, each node by its own method.

Five lab nodes run real sshd with the lab's MicroK8s stand-ins (mko.lab.microk8s):

* lab-n1  control plane, physical: ``systemctl poweroff`` over SSH, Wake-on-LAN (the drain host);
* lab-n2  control plane, a Proxmox VM: ``microk8s stop`` over SSH, then the PVE API's shutdown
          (fakepve, the wire-level fake of the API), then started again by the API;
* lab-n3  worker, physical, like lab-n1;
* lab-n4  worker behind an IPMI BMC (OpenIPMI's ipmi_sim): chassis soft-off, then power on;
* lab-n5  worker behind a Redfish BMC (sushy-tools): GracefulShutdown, then On.

The fakes serve in the lab's orch namespace, where the orchestrator runs, as on a management network.
A :class:`power_peers.PowerCoupling` plays the machines behind them: when the hypervisor or BMC says a
machine went off (or on), that lab node loses power (or boots). Every "succeeded" power step must say
what confirmed it: the driver's own power query, or SSH going silent after it accepted the power-off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from power_peers import IpmiSim, PowerCoupling, PveServer, RedfishEmulator
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner
from upslab import wait_until

from mko.cli import app
from mko.db.models import Operation, OperationStatus
from mko.lab import Microk8sCluster, RunningLab, configure_microk8s, enter_netns
from mko.lab.inventory import register_lab
from mko.settings import Settings, get_settings

DRAIN = "--ignore-daemonsets --delete-emptydir-data --timeout=120s"
WORKERS = ("lab-n3", "lab-n4", "lab-n5")
CONFIRMED_BY = {
    "lab-n1": "SSH stopped answering",
    "lab-n2": "proxmox power query",
    "lab-n3": "SSH stopped answering",
    "lab-n4": "ipmi power query",
    "lab-n5": "redfish power query",
}


@pytest.fixture
def fast(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings, polling every 0.1 s (the CLI reads the same values from the environment)."""
    monkeypatch.setenv("MKO_PROBE_INTERVAL", "0.1")
    get_settings.cache_clear()
    return get_settings()


class Peers:
    """The hypervisor and the two BMCs, serving in the lab's orch namespace."""

    def __init__(self, directory: Path, orch: str) -> None:
        for name in ("pve", "ipmi", "redfish"):
            (directory / name).mkdir()
        self.pve = PveServer(directory / "pve", netns=orch)
        self.pve.pve.add_vm(102, "lab-n2", status="running")
        self.ipmi = IpmiSim(directory / "ipmi", netns=orch, power="1")
        self.redfish = RedfishEmulator(directory / "redfish", netns=orch, power_state="On")

    def redfish_on(self) -> bool | None:
        state = self.redfish.system()["PowerState"]
        return {"On": True, "Off": False}.get(state)

    def stop(self) -> None:
        self.redfish.stop()
        self.ipmi.stop()
        self.pve.stop()


@pytest.fixture
def peers(tmp_path: Path, lab_factory: Any) -> Iterator[tuple[RunningLab, Peers]]:
    running = lab_factory(5, ssh=True, boot_delay=0.1)
    started = Peers(tmp_path, running.lab.orch)
    yield running, started
    started.stop()


def _cli(cli: CliRunner, running: RunningLab, *args: str, stdin: str | None = None) -> Any:
    with enter_netns(running.lab.orch):
        return cli.invoke(app, list(args), input=stdin)


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, result.stdout + result.stderr
    return result


def _configure(cli: CliRunner, running: RunningLab, peers: Peers) -> None:
    """lab-n2 becomes a Proxmox VM, lab-n4 an IPMI node, lab-n5 a Redfish node (the CLI an operator uses)."""
    pve, ipmi, redfish = peers.pve, peers.ipmi, peers.redfish
    _ok(
        _cli(
            cli, running, "proxmox", "add", "pve", "--host", "127.0.0.1", "--port", str(pve.port),
            "--token-id", PveServer.TOKEN_ID, "--secret", "-", "--ca-file", pve.cafile,
            stdin=PveServer.TOKEN_SECRET + "\n",
        )
    )  # fmt: skip
    _ok(
        _cli(
            cli,
            running,
            "wol",
            "configure",
            "2",
            "--virtual",
            "--proxmox-vm-id",
            "102",
            "--proxmox-host-id",
            "1",
        )
    )
    _ok(
        _cli(
            cli, running, "wol", "configure", "4", "--method", "ipmi", "--bmc-address", "127.0.0.1",
            "--bmc-port", str(ipmi.port), "--bmc-username", IpmiSim.USER, "--bmc-password", "-",
            stdin=IpmiSim.PASSWORD + "\n",
        )
    )  # fmt: skip
    _ok(
        _cli(
            cli, running, "wol", "configure", "5", "--method", "redfish", "--redfish-url", redfish.url,
            "--bmc-username", RedfishEmulator.USER, "--bmc-password", "-",
            "--bmc-ca-file", str(redfish.cafile),
            stdin=RedfishEmulator.PASSWORD + "\n",
        )
    )  # fmt: skip


def _up(running: RunningLab, cluster: Microk8sCluster) -> None:
    running.power_on_all()
    wait_until(
        lambda: all(n["ready"] for n in cluster.nodes().values()) and len(cluster.nodes()) == 5,
        10,
        what="every node Ready",
    )


def _calls(running: RunningLab) -> list[tuple[str, str]]:
    """Every stand-in call of every node, oldest first: (hostname, "command args…"); boots left out."""
    entries = []
    for node in running.nodes:
        assert node.system is not None
        entries += [
            (call["t"], node.hostname, " ".join([call["cmd"], *call["argv"]]))
            for call in node.system.calls()
            if call["cmd"] != "<boot>"
        ]
    return [(host, command) for _, host, command in sorted(entries)]


def _operation(session: Session, kind: str) -> Operation:
    session.expire_all()
    [operation] = session.scalars(select(Operation).where(Operation.kind == kind))
    _ = operation.steps
    return operation


def test_a_mixed_cluster_shuts_down_in_order_and_every_node_comes_back_by_its_own_method(
    fast: Settings, session: Session, cli: CliRunner, peers: tuple[RunningLab, Peers]
) -> None:
    running, fakes = peers
    cluster = configure_microk8s(running, control_planes=2)
    register_lab(session, running, control_planes=2)
    fast.ssh_known_hosts.parent.mkdir(parents=True, exist_ok=True)
    fast.ssh_known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")
    _configure(cli, running, fakes)
    n2, n4, n5 = (running.node(name) for name in ("n2", "n4", "n5"))
    links = [
        (n2, lambda: fakes.pve.status(102) == "running"),
        (n4, lambda: fakes.ipmi.power == "1"),
        (n5, fakes.redfish_on),
    ]
    with PowerCoupling(links, running.lab.orch) as coupling:
        _up(running, cluster)
        dry = _ok(_cli(cli, running, "cluster", "shutdown", "1", "--dry-run"))
        assert dry.stdout.splitlines() == [
            "graceful shutdown of cluster 1 (lab); drain host: lab-n1",
            "1. workers, in parallel:",
            "   kubectl drain  lab-n3 (run on lab-n1)",
            "   microk8s stop  lab-n3 (over SSH)",
            "   power off      lab-n3 (systemctl poweroff over SSH)",
            "   kubectl drain  lab-n4 (run on lab-n1)",
            "   microk8s stop  lab-n4 (over SSH)",
            "   power off      lab-n4 (soft-off by the ipmi driver)",
            "   kubectl drain  lab-n5 (run on lab-n1)",
            "   microk8s stop  lab-n5 (over SSH)",
            "   power off      lab-n5 (soft-off by the redfish driver)",
            "2. then control plane, alone:",
            "   kubectl drain  lab-n2 (run on lab-n1)",
            "   microk8s stop  lab-n2 (over SSH)",
            "   power off      lab-n2 (soft-off by the proxmox driver)",
            "3. then the drain host, last of all:",
            "   microk8s stop  lab-n1 (over SSH)",
            "   power off      lab-n1 (systemctl poweroff over SSH)",
            "dry run: nothing was done",
        ]

        # ---------------------------------------------------------------- shutdown
        result = _ok(_cli(cli, running, "cluster", "shutdown", "1", "--yes", "--json"))
        body = json.loads(result.stdout)
        assert (body["status"], body["unconfirmed"], body["failures"]) == ("succeeded", [], [])
        assert sorted(body["powered_off"]) == [f"lab-n{i}" for i in range(1, 6)]
        assert body["powered_off"][-2:] == [
            "lab-n2",
            "lab-n1",
        ]  # control planes last, the drain host at the end
        shutdown = _operation(session, "cluster_shutdown")
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
        # MicroK8s was stopped on every node before its power went, whichever way the power went.
        calls = _calls(running)
        for host in ("lab-n2", "lab-n4", "lab-n5"):
            assert (host, "microk8s stop") in calls or (host, "snap stop microk8s --disable") in calls
            assert not any(h == host and c == "systemctl poweroff" for h, c in calls)  # the driver did it
        assert calls[-2:] == [("lab-n1", "microk8s stop"), ("lab-n1", "systemctl poweroff")]
        assert ("lab-n1", f"microk8s kubectl drain lab-n2 {DRAIN}") in calls
        # Each peer was asked the graceful way, and each machine is off.
        assert ("POST", "/api2/json/nodes/pve1/qemu/102/status/shutdown") in fakes.pve.calls()
        assert "set shutdown 1" in fakes.ipmi.requests
        assert fakes.redfish.resets == ["GracefulShutdown"]
        assert (fakes.pve.status(102), fakes.ipmi.power) == ("stopped", "0")
        assert fakes.redfish.system()["PowerState"] == "Off"
        wait_until(lambda: all(n.power.state == "off" for n in running.nodes), 10, what="every node off")
        assert sorted(coupling.changes) == [("lab-n2", "off"), ("lab-n4", "off"), ("lab-n5", "off")]

        # ---------------------------------------------------------------- restore
        for node in running.nodes:
            node.recorder.clear()
        woken = _ok(_cli(cli, running, "wol", "wake-cluster", "1", "--wait", "--timeout", "60", "--json"))
        wake = json.loads(woken.stdout)
        assert wake["status"] == "succeeded", wake
        how = {n["hostname"]: (n["method"], n["state"], n["verified_by"]) for n in wake["nodes"]}
        assert how == {
            "lab-n1": ("ethernet", "up", "tcp/2222"),
            "lab-n2": ("proxmox", "up", "query"),
            "lab-n3": ("ethernet", "up", "tcp/2222"),
            "lab-n4": ("ipmi", "up", "query"),
            "lab-n5": ("redfish", "up", "query"),
        }
        # Control planes first; magic packets only for the machines that wake by them.
        assert [n["hostname"] for n in wake["nodes"]][:2] == ["lab-n1", "lab-n2"]
        assert [n.hostname for n in running.nodes if n.recorder.packets_for(n.mac)] == ["lab-n1", "lab-n3"]
        assert ("POST", "/api2/json/nodes/pve1/qemu/102/status/start") in fakes.pve.calls()
        assert "set power 1" in fakes.ipmi.requests and fakes.redfish.resets[-1] == "On"

        before = len(_calls(running))
        recovered = _ok(_cli(cli, running, "cluster", "recover", "1", "--timeout", "60", "--json"))
        report = json.loads(recovered.stdout)
        assert report["status"] == "succeeded", report
        assert report["summary"] == "5/5 started, 5/5 Ready, 4 uncordoned"
        assert report["uncordoned"] == ["lab-n2", "lab-n3", "lab-n4", "lab-n5"]
        after = _calls(running)[before:]
        starts = [
            i for i, c in enumerate(after) if c[1] in ("microk8s start", "snap start microk8s --enable")
        ]
        polls = [i for i, c in enumerate(after) if c[1] == "microk8s kubectl get nodes -o json"]
        uncordons = [i for i, c in enumerate(after) if "uncordon" in c[1]]
        assert {after[i][0] for i in starts} == {f"lab-n{i}" for i in range(1, 6)}
        # MicroK8s started everywhere, then every node Ready, and only then uncordoned.
        assert max(starts) < min(polls) <= max(polls) < min(uncordons)
        assert all(n["ready"] and not n["cordoned"] for n in cluster.nodes().values())
        assert sorted(coupling.changes[3:]) == [("lab-n2", "on"), ("lab-n4", "on"), ("lab-n5", "on")]
