"""The lab's SSH side itself: a real sshd per node, its own hostname and files, stand-ins, power."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import asyncssh
import pytest

from mko.lab.harness import RunningLab
from mko.lab.netns import NodeSpec, enter_netns
from mko.platform.errors import LabError
from mko.power.magic import send_magic_packet


async def _run(
    running: RunningLab, name: str, command: str, known_hosts: Any
) -> asyncssh.SSHCompletedProcess:
    node = running.node(name)
    assert running.ssh is not None
    async with asyncssh.connect(
        node.ip,
        running.ssh.port,
        username="root",
        client_keys=[str(running.ssh.client_key)],
        known_hosts=known_hosts,
        config=None,
    ) as connection:
        return await connection.run(command, check=False)


def test_each_node_runs_its_own_sshd_with_its_own_identity_and_stand_ins(lab_factory: Any) -> None:
    running = lab_factory(
        [NodeSpec(), NodeSpec(nic_wol_supports="", network_service="NetworkManager")], ssh=True
    )
    running.power_on_all()
    known = asyncssh.import_known_hosts("\n".join(running.known_hosts_lines()))

    async def main() -> list[asyncssh.SSHCompletedProcess]:
        return [
            await _run(running, "n1", "hostname; getent hosts lab-n2; ip -j route show default", known),
            await _run(running, "n1", "ethtool veth0; ethtool -s veth0 wol d; ethtool -s veth0 wol x", known),
            await _run(running, "n2", "ethtool -s veth0 wol g", known),
            await _run(running, "n2", "systemctl is-active NetworkManager ssh systemd-networkd", known),
        ]

    with enter_netns(running.lab.orch):
        identity, ethtool, unsupported, services = asyncio.run(main())
    hostname, hosts, route = str(identity.stdout).splitlines()
    assert hostname == "lab-n1" and hosts.split() == ["10.213.0.12", "lab-n2", "n2"]
    assert json.loads(route)[0]["gateway"] == running.lab.orch_ip
    assert "\tSupports Wake-on: pumbg\n\tWake-on: g\n" in str(ethtool.stdout)
    assert "bad command line argument" in str(ethtool.stderr) and ethtool.exit_status == 1
    n1, n2 = (r.system for r in running.nodes)
    assert n1 is not None and n2 is not None
    assert n1.nic()["wake_on"] == "d"
    assert [c["argv"] for c in n1.calls("ethtool")] == [
        ["veth0"],
        ["-s", "veth0", "wol", "d"],
        ["-s", "veth0", "wol", "x"],
    ]
    assert unsupported.exit_status == 75 and "Operation not supported" in str(unsupported.stderr)
    assert str(services.stdout).split() == ["active", "active", "inactive"] and services.exit_status == 3
    # The host saw none of it: its own hostname and files are untouched.
    assert socket.gethostname() != "lab-n1"


def test_power_off_kills_the_node_and_only_an_armed_card_boots_it(lab_factory: Any) -> None:
    running = lab_factory([NodeSpec(nic_wake_on_default="d")], ssh=True, boot_delay=0.1)
    node = running.nodes[0]
    system = node.system
    assert system is not None
    known = asyncssh.import_known_hosts("\n".join(running.known_hosts_lines()))
    running.power_on_all()
    node.power.power_off()
    with enter_netns(running.lab.orch), pytest.raises(ConnectionRefusedError):
        asyncio.run(_run(running, "n1", "true", known))
    # Wake-on d (the driver default after every boot): the magic packet arrives and nothing happens.
    with enter_netns(running.lab.orch):
        send_magic_packet(node.mac, address=running.lab.broadcast)
    assert node.recorder.wait_for(1, timeout=5, mac=node.mac)
    assert not node.power.wait_booted(0.5)
    system.set_nic(wake_on="g")
    with enter_netns(running.lab.orch):
        send_magic_packet(node.mac, address=running.lab.broadcast)
    assert node.power.wait_booted(5)
    with enter_netns(running.lab.orch):
        assert asyncio.run(_run(running, "n1", "true", known)).exit_status == 0
    assert node.power.boot_count == 2
    # Booting resets the card to its driver default (nothing persisted it).
    assert system.nic()["wake_on"] == "d"
    assert [c["cmd"] for c in system.calls()].count("<boot>") == 2


def test_lab_without_ssh_has_no_known_hosts(lab_factory: Any) -> None:
    running = lab_factory(1)
    with pytest.raises(LabError, match="ssh=True"):
        running.known_hosts_lines()


def test_a_node_can_power_itself_off_or_reboot_from_inside(lab_factory: Any) -> None:
    running = lab_factory(1, ssh=True, boot_delay=0.1)
    node = running.nodes[0]
    known = asyncssh.import_known_hosts("\n".join(running.known_hosts_lines()))
    running.power_on_all()
    with enter_netns(running.lab.orch):
        assert asyncio.run(_run(running, "n1", "systemctl reboot", known)).exit_status == 0
    deadline = time.monotonic() + 5
    while node.power.boot_count < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.power.wait_booted(5) and node.power.boot_count == 2
    with enter_netns(running.lab.orch):
        assert asyncio.run(_run(running, "n1", "systemctl poweroff", known)).exit_status == 0
    deadline = time.monotonic() + 5
    while node.power.is_on and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.power.state == "off"
    assert node.system is not None
    assert [c["argv"] for c in node.system.calls("systemctl")] == [["reboot"], ["poweroff"]]
