"""The hypervisor as a node (``proxmox_host``): woken by its BMC (OpenIPMI's ipmi_sim) before its VMs, up only
once its API answers, shut down through the PVE API (fakepve, extended so the host really goes away)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from support.peers import HostPveServer, IpmiSim, PveServer


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[HostPveServer, IpmiSim]]:
    """A PVE host (off: its chassis off, its API silent) with VMs 101 and 102 on node pve1."""
    (tmp_path / "ipmi").mkdir()
    bmc = IpmiSim(tmp_path / "ipmi", power="0")
    server = HostPveServer(
        tmp_path, lambda: bmc.power == "1", lambda: bmc.state.write_text("0\n"), boot_delay=0.5
    )
    server.pve.add_vm(101, "k8s-vm1", status="stopped")
    server.pve.add_vm(102, "k8s-vm2", status="stopped")
    yield server, bmc
    server.stop()
    bmc.stop()


def _cli(cli: CliRunner, *args: str, stdin: str | None = None) -> Any:
    result = cli.invoke(app, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result


def _inventory(cli: CliRunner, host: HostPveServer, bmc: IpmiSim) -> tuple[int, list[int]]:
    _cli(cli, "cluster", "add", "rack")
    _cli(
        cli, "proxmox", "add", "pve", "--host", "127.0.0.1", "--port", str(host.port),
        "--token-id", PveServer.TOKEN_ID, "--secret", "-", "--ca-file", host.cafile,
        stdin=PveServer.TOKEN_SECRET + "\n",
    )  # fmt: skip
    added = _cli(
        cli, "node", "add", "pve1", "127.0.0.1", "-c", "1", "--method", "proxmox_host",
        "--proxmox-host-node", "pve1", "--proxmox-host-power-method", "ipmi",
        "--bmc-address", "127.0.0.1", "--bmc-port", str(bmc.port), "--bmc-username", IpmiSim.USER,
        "--bmc-password", "-", "--json", stdin=IpmiSim.PASSWORD + "\n",
    )  # fmt: skip
    host_id = json.loads(added.stdout)["id"]
    _cli(cli, "wol", "configure", str(host_id), "--proxmox-host-id", "1")  # the seed's column, like a VM's
    _cli(cli, "wol", "enable", str(host_id))
    vms = []
    for vmid in (101, 102):
        vm = _cli(cli, "node", "add", f"vm{vmid}", "127.0.0.1", "-c", "1", "--json")
        vm_id = json.loads(vm.stdout)["id"]
        _cli(cli, "wol", "configure", str(vm_id), "--virtual", "--proxmox-vm-id", str(vmid),
             "--proxmox-host-id", "1")  # fmt: skip
        _cli(cli, "wol", "enable", str(vm_id))
        vms.append(vm_id)
    return host_id, vms


def test_the_host_comes_up_by_its_bmc_before_its_vms_and_goes_down_through_its_api(
    session: Session, cli: CliRunner, machine: tuple[HostPveServer, IpmiSim]
) -> None:
    host, bmc = machine
    host_id, vms = _inventory(cli, host, bmc)
    status = json.loads(_cli(cli, "node", "power", str(host_id), "status", "--json").stdout)
    assert status["state"] == "off"  # the API is silent and the BMC says the chassis is off
    # The VMs depend on their host without being told: the plan puts it a level before them.
    plan = json.loads(_cli(cli, "wol", "wake-cluster", "1", "--dry-run", "--json").stdout)
    levels = [[(n["node_id"], n["depends_on"]) for n in level["nodes"]] for level in plan["levels"]]
    assert levels == [[(host_id, [])], [(vms[0], [host_id]), (vms[1], [host_id])]]

    woken = json.loads(_cli(cli, "wol", "wake-cluster", "1", "--wait", "--timeout", "30", "--json").stdout)
    assert woken["status"] == "succeeded", woken
    by_id = {n["node_id"]: n for n in woken["nodes"]}
    assert (by_id[host_id]["method"], by_id[host_id]["state"]) == ("proxmox_host", "up")
    assert by_id[host_id]["verified_by"] == "query"
    # The chassis was switched on through IPMI; the host counted as up only once its API answered, and
    # only then were its VMs started.
    assert "set power 1" in bmc.requests and host.boots == 1
    for vm in vms:
        assert by_id[vm]["state"] == "up" and by_id[vm]["first_sent_after"] >= by_id[host_id]["up_after"]
    assert host.status(101) == host.status(102) == "running"
    assert json.loads(_cli(cli, "node", "power", str(host_id), "status", "--json").stdout)["state"] == "on"

    # Down through the API: PVE stops its guests and powers off; mko sees the API go and the BMC say off.
    soft = json.loads(_cli(cli, "node", "power", str(host_id), "soft", "--timeout", "20", "--json").stdout)
    [outcome] = soft["nodes"]
    assert (outcome["state"], outcome["verified_by"]) == ("off", "query"), soft
    assert host.pve.power_log == [("shutdown", "pve1")] and not host.powered
    assert bmc.power == "0" and host.status(101) == "stopped"
    assert ("POST", "/api2/json/nodes/pve1/status") in host.calls()
    # A cluster shutdown takes the VMs before their host (the wake's order, reversed).
    lines = _cli(cli, "cluster", "shutdown", "1", "--dry-run", "--force").stdout
    assert lines.index("vm101") < lines.index("vm102") < lines.rindex("pve1"), lines
    assert "a worker other nodes depend on" in lines


def test_a_host_without_a_power_method_is_refused_with_the_field(session: Session, cli: CliRunner) -> None:
    _cli(cli, "cluster", "add", "rack")
    refused = cli.invoke(
        app,
        [
            "node",
            "add",
            "pve1",
            "127.0.0.1",
            "--method",
            "proxmox_host",
            "--proxmox-host-power-method",
            "pxe",
        ],
    )
    assert refused.exit_code == 2 and "proxmox-host-power-method" in refused.stderr.replace("_", "-")
