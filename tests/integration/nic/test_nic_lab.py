"""MAC collection, host-key trust and NIC Wake-on-LAN over SSH, against real sshd in lab namespaces.

Every node runs OpenSSH's sshd in its own network, UTS and mount namespaces; `ethtool`, `systemctl`
and `nmcli` there are the lab's stand-ins (mko.lab.nodesys), which keep each node's Wake-on state.
The orchestrator side runs in the lab's orch namespace, exactly as it would on the LAN.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncssh
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from mko.app import create_app
from mko.cli.root import app
from mko.inventory.nodes import get_node, update_node
from mko.inventory.schemas import WolConfigure
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import NodeSpec, enter_netns
from mko.nic.persistence import link_file, oneshot_unit
from mko.nic.wol_switch import set_nic_wol
from mko.operations.records import Actor
from mko.platform.db.models.inventory import Node
from mko.platform.settings import Settings
from mko.power.magic import send_magic_packet
from support.auth import admin_headers


def _trust_all(settings: Settings, running: RunningLab) -> None:
    """Record every node's host key as an operator who checked them would (the lab made the keys)."""
    settings.ssh_known_hosts.parent.mkdir(parents=True, exist_ok=True)
    settings.ssh_known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")


@contextmanager
def _api(settings: Settings, running: RunningLab) -> Iterator[TestClient]:
    """The real app whose event loop (and so every SSH socket) lives in the orch namespace."""
    with enter_netns(running.lab.orch):
        application = create_app(settings)
        client = TestClient(application, headers=admin_headers(settings.database_url))
        client.__enter__()
    try:
        yield client
    finally:
        client.__exit__(None, None, None)
        application.state.engine.dispose()


def _cli(cli: CliRunner, running: RunningLab, *args: str, input: str | None = None) -> Any:
    with enter_netns(running.lab.orch):
        return cli.invoke(app, list(args), input=input)


def _node(session: Session, node_id: int) -> Node:
    session.expire_all()
    return get_node(session, node_id)


def _boot(running: RunningLab, *names: str) -> None:
    for name in names:
        running.node(name).power.power_on()
    for name in names:
        assert running.node(name).power.wait_booted(10), name


def test_collect_mac_by_cli_and_api_fills_mac_interface_and_prefix(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    running = lab_factory(4, ssh=True, subnet="10.213.0.0/26")
    _, nodes = register_lab(session, running, macs=False)
    ids = [n.id for n in nodes]
    _boot(running, "n1", "n2", "n3")  # n4 stays off: unreachable
    _trust_all(settings, running)

    result = _cli(cli, running, "wol", "collect-mac", "--node-ids", f"{ids[0]},{ids[1]}", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "succeeded"
    assert [
        (r["hostname"], r["state"], r["interface"], r["mac"], r["prefix_len"]) for r in body["nodes"]
    ] == [
        ("lab-n1", "collected", "veth0", running.nodes[0].mac, 26),
        ("lab-n2", "collected", "veth0", running.nodes[1].mac, 26),
    ]

    with _api(settings, running) as client:
        response = client.post("/api/nodes/wol/collect-mac", json={"node_ids": [ids[2], ids[3]]})
        assert response.status_code == 200, response.text
        api = response.json()
        operation = client.get(api["operation_url"]).json()
    assert api["status"] == "partial"
    rows = {r["hostname"]: r for r in api["nodes"]}
    assert (rows["lab-n3"]["state"], rows["lab-n3"]["mac"]) == ("collected", running.nodes[2].mac)
    assert rows["lab-n4"]["state"] == "failed"
    assert "cannot connect to 10.213.0.14:2222" in rows["lab-n4"]["error"]
    assert operation["kind"] == "wol_collect_mac" and operation["actor"].startswith("token:test-")
    assert {s["name"]: s["status"] for s in operation["steps"]} == {
        "collect lab-n3": "succeeded",
        "collect lab-n4": "failed",
    }

    for lab_node, node_id in zip(running.nodes[:3], ids, strict=False):
        node = _node(session, node_id)
        assert (node.wol_mac_address, node.nic_interface, node.power_params["wol_prefix_len"]) == (
            lab_node.mac,
            "veth0",
            26,
        )
        assert node.nic_collected_at is not None
        found = {i["name"]: i for i in node.nic_interfaces or []}
        assert found["veth0"]["addresses"][0] == f"{lab_node.ip}/26" and found["veth0"]["default_route"]
        assert found["lo"]["kind"] == "loopback" and found["lo"]["mac"] is None
    assert _node(session, ids[3]).wol_mac_address is None

    # A stored MAC that differs is reported, and replaced only with --overwrite.
    update_node(session, ids[0], WolConfigure(wol_mac_address="02:00:00:00:aa:01"))
    differs = _cli(cli, running, "wol", "collect-mac", "--node-ids", str(ids[0]), "--json")
    assert differs.exit_code == 0, differs.stderr
    [row] = json.loads(differs.stdout)["nodes"]
    assert row["state"] == "differs" and "use --overwrite" in row["error"]
    assert _node(session, ids[0]).wol_mac_address == "02:00:00:00:aa:01"
    updated = _cli(cli, running, "wol", "collect-mac", "--node-ids", str(ids[0]), "--overwrite", "--json")
    [row] = json.loads(updated.stdout)["nodes"]
    assert (row["state"], row["previous_mac"]) == ("updated", "02:00:00:00:aa:01")
    assert _node(session, ids[0]).wol_mac_address == running.nodes[0].mac

    # Every node at once (no --node-ids): the unreachable one makes the command exit 1, others succeed.
    everything = _cli(cli, running, "wol", "collect-mac")
    assert everything.exit_code == 1
    assert "3/4 node(s) read: 1 failed, 3 unchanged" in " ".join(everything.stdout.split())
    bad = _cli(cli, running, "wol", "collect-mac", "--node-ids", "1,x")
    assert bad.exit_code == 2 and "--node-ids" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    missing = _cli(cli, running, "wol", "collect-mac", "--node-ids", "99")
    assert missing.exit_code == 2 and "node 99 not found" in missing.stderr


def test_host_keys_are_trusted_only_when_asked_and_a_changed_key_is_refused(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    running = lab_factory(2, ssh=True)
    _, nodes = register_lab(session, running, macs=False)
    first, second = nodes
    running.power_on_all()
    lines = running.known_hosts_lines()
    presented = [
        asyncssh.import_public_key(line.split(" ", 1)[1]).get_fingerprint("sha256") for line in lines
    ]

    # First contact: nothing is recorded by itself; the error shows the key and the way out.
    with _api(settings, running) as client:
        response = client.post("/api/nodes/wol/collect-mac", json={"node_ids": [first.id]})
        [row] = response.json()["nodes"]
        assert row["state"] == "failed"
        assert "host key of 10.213.0.11:2222 is not trusted yet" in row["error"]
        assert presented[0] in row["error"] and f"mko node trust {first.id}" in row["error"]
        assert not settings.ssh_known_hosts.exists()

        shown = client.get(f"/api/nodes/{second.id}/ssh/host-key").json()
        assert (shown["status"], shown["fingerprint"]) == ("unknown", f"ssh-ed25519 {presented[1]}")
        wrong = client.post(f"/api/nodes/{second.id}/ssh/trust", json={"fingerprint": presented[0]})
        assert wrong.status_code == 409 and "not the expected" in wrong.json()["detail"]
        assert not settings.ssh_known_hosts.exists()
        trusted = client.post(f"/api/nodes/{second.id}/ssh/trust", json={"fingerprint": presented[1]})
        assert trusted.status_code == 200, trusted.text
        assert (trusted.json()["action"], trusted.json()["fingerprint"]) == (
            "recorded",
            f"ssh-ed25519 {presented[1]}",
        )
        again = client.post(f"/api/nodes/{second.id}/ssh/trust").json()
        assert again["action"] == "already trusted"
        bad = client.post(f"/api/nodes/{second.id}/ssh/trust", json={"fingerprint": "md5:00"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "fingerprint"

    # The CLI shows the fingerprint and asks; "n" records nothing, "y" records the key.
    refused = _cli(cli, running, "node", "trust", str(first.id), input="n\n")
    assert refused.exit_code == 1 and presented[0] in refused.stdout
    assert lines[0] not in settings.ssh_known_hosts.read_text()
    accepted = _cli(cli, running, "node", "trust", str(first.id), input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert "recorded" in accepted.stdout
    assert sorted(settings.ssh_known_hosts.read_text().splitlines()) == sorted(lines)

    # The node now presents another key (reinstalled, or an impostor): refused, nothing runs there.
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    impostor_line = f"[10.213.0.11]:2222 {impostor.export_public_key().decode().strip()}"
    settings.ssh_known_hosts.write_text(impostor_line + "\n" + lines[1] + "\n")
    system = running.nodes[0].system
    assert system is not None
    calls_before = system.calls()
    with _api(settings, running) as client:
        response = client.post(f"/api/nodes/{first.id}/wol/enable")
        assert response.status_code == 502
        detail = response.json()["detail"]
        assert f"node {first.id} (lab-n1): HOST KEY CHANGED for 10.213.0.11:2222" in detail
        assert impostor.get_fingerprint("sha256") in detail and presented[0] in detail
        assert "nothing was run" in detail
        assert system.calls() == calls_before
        assert _node(session, first.id).wol_enabled is False
        keep = client.post(f"/api/nodes/{first.id}/ssh/trust")
        assert keep.status_code == 409 and "--replace" in keep.json()["detail"]
        replaced = client.post(f"/api/nodes/{first.id}/ssh/trust", json={"replace": True})
        assert replaced.status_code == 200 and replaced.json()["action"] == "replaced"
        kinds = [
            (op["kind"], op["status"])
            for op in client.get("/api/operations", params={"kind": "ssh_trust"}).json()
        ]
    assert settings.ssh_known_hosts.read_text().splitlines() == [lines[1], lines[0]]
    assert kinds[0] == ("ssh_trust", "succeeded") and ("ssh_trust", "failed") in kinds


def test_enable_and_disable_configure_the_card_persistently_and_read_back(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    off = "d"  # every card starts (and boots) with Wake-on d, so enabling visibly changes it
    running = lab_factory(
        [
            NodeSpec(nic_wake_on_default=off),
            NodeSpec(nic_wake_on_default=off, network_service="systemd-networkd"),
            NodeSpec(nic_wake_on_default=off, network_service="NetworkManager"),
        ],
        ssh=True,
    )
    _, nodes = register_lab(session, running)
    for node in nodes:
        update_node(session, node.id, WolConfigure(wol_enabled=False))
    running.power_on_all()
    _trust_all(settings, running)
    n1, n2, n3 = (r.system for r in running.nodes)
    assert n1 is not None and n2 is not None and n3 is not None

    with _api(settings, running) as client:
        response = client.post(f"/api/nodes/{nodes[0].id}/wol/enable")
        assert response.status_code == 200, response.text
        body = response.json()
        operation = client.get(f"/api/operations/{body['operation_id']}").json()
        status = client.get(f"/api/nodes/{nodes[0].id}/wol/status").json()
    assert body["wol_enabled"] is True and body["nic_wol_state"] == "g"
    assert body["nic"]["persistence"] == "systemd-unit" and body["nic"]["wake_on_before"] == "d"
    assert [s["name"] for s in operation["steps"]] == [
        "connect",
        "find network card",
        "read Wake-on",
        "ethtool -s veth0 wol g",
        "persist",
        "read back",
        "orchestrator flag",
    ]
    assert status["nic"] | {"checked_at": None, "interfaces_collected_at": None} == {
        "interface": "veth0",
        "supports_wake_on": "pumbg",
        "wake_on": "g",
        "magic_packet_capable": True,
        "armed": True,
        "persistence": "systemd-unit",
        "checked_at": None,
        "interfaces_collected_at": None,
    }
    assert n1.nic()["wake_on"] == "g"
    assert (n1.etc_system / "mko-wol-veth0.service").read_text() == oneshot_unit("veth0", True)
    assert "mko-wol-veth0.service" in n1.services()["enabled"]
    assert ["-s", "veth0", "wol", "g"] in [c["argv"] for c in n1.calls("ethtool")]

    enabled = _cli(cli, running, "wol", "enable", str(nodes[1].id))
    assert enabled.exit_code == 0, enabled.stderr
    assert "systemd .link file /etc/systemd/network/50-mko-wol-veth0.link" in " ".join(enabled.stdout.split())
    link = n2.etc_network / "50-mko-wol-veth0.link"
    assert link.read_text() == link_file(running.nodes[1].mac, True)
    assert n2.nic()["wake_on"] == "g"

    enabled = _cli(cli, running, "wol", "enable", str(nodes[2].id), "--json")
    assert enabled.exit_code == 0, enabled.stderr
    assert json.loads(enabled.stdout)["nic"]["persistence"] == "NetworkManager"
    assert n3.network_manager()["connections"]["Wired connection 1"]["802-3-ethernet.wake-on-lan"] == "magic"
    assert n3.nic()["wake_on"] == "g"

    disabled = _cli(cli, running, "wol", "disable", str(nodes[1].id), "--json")
    assert disabled.exit_code == 0, disabled.stderr
    assert json.loads(disabled.stdout)["wol_enabled"] is False
    assert link.read_text() == link_file(running.nodes[1].mac, False)
    assert n2.nic()["wake_on"] == "d" and _node(session, nodes[1].id).nic_wol_state == "d"

    # Persistence is real: after a power cycle each card comes back as configured, not as the driver
    # default nor as someone left it by hand; and only an armed card boots its node on a magic packet.
    for lab_node in running.nodes:
        lab_node.power.power_off()
    n2.set_nic(wake_on="g")  # `ethtool -s veth0 wol g` by hand: armed now, but not after a reboot
    running.nodes[1].power.power_on()
    assert running.nodes[1].power.wait_booted(5)
    assert n2.nic()["wake_on"] == "d"
    running.nodes[1].power.power_off()
    with enter_netns(running.lab.orch):
        for lab_node in running.nodes:
            send_magic_packet(lab_node.mac, address=running.lab.broadcast)
    for lab_node in running.nodes:
        assert lab_node.recorder.wait_for(1, timeout=5, mac=lab_node.mac)
    assert running.nodes[0].power.wait_booted(5) and running.nodes[2].power.wait_booted(5)
    time.sleep(running.nodes[1].power.boot_delay + 0.2)
    assert not running.nodes[1].power.is_on and running.nodes[1].power.wake_packets >= 1
    assert (n1.nic()["wake_on"], n3.nic()["wake_on"]) == ("g", "g")
    running.nodes[1].power.power_on()
    assert running.nodes[1].power.wait_booted(5)
    assert n2.nic()["wake_on"] == "d"


def test_card_without_magic_packet_and_unreachable_node_change_nothing(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    running = lab_factory(
        [NodeSpec(nic_wol_supports="pumb"), NodeSpec(nic_wol_supports=""), NodeSpec()], ssh=True
    )
    _, nodes = register_lab(session, running)
    for node in nodes:
        update_node(session, node.id, WolConfigure(wol_enabled=False))
    _boot(running, "n1", "n2")  # n3 is off
    _trust_all(settings, running)

    with _api(settings, running) as client:
        response = client.post(f"/api/nodes/{nodes[0].id}/wol/enable")
        assert response.status_code == 409, response.text
        assert "NIC veth0 cannot wake on magic packet (Supports Wake-on: pumb)" in response.json()["detail"]
        failed = client.get("/api/operations", params={"kind": "wol_enable"}).json()[0]
        unreachable = client.post(f"/api/nodes/{nodes[2].id}/wol/enable")
        assert unreachable.status_code == 502
        assert "cannot connect to 10.213.0.13:2222" in unreachable.json()["detail"]
        flagged = client.post(f"/api/nodes/{nodes[2].id}/wol/enable", json={"flag_only": True})
        assert flagged.status_code == 200 and flagged.json()["wol_enabled"] is True
    assert failed["status"] == "failed" and "flag unchanged" in failed["summary"]
    assert failed["steps"][-1]["status"] == "failed"
    node = _node(session, nodes[0].id)
    assert (node.wol_enabled, node.nic_wol_supported, node.nic_wol_state) == (False, "pumb", "d")
    system = running.nodes[0].system
    assert system is not None and system.nic()["wake_on"] == "d"
    assert not [c for c in system.calls("ethtool") if "-s" in c["argv"]]

    no_wol = _cli(cli, running, "wol", "enable", str(nodes[1].id))
    assert no_wol.exit_code == 1
    assert no_wol.stderr.count("\n") == 1
    assert "cannot wake on magic packet (Supports Wake-on: not reported by the driver)" in no_wol.stderr
    assert _node(session, nodes[1].id).wol_enabled is False
    # Disabling a card without Wake-on support has nothing to do on the card and succeeds.
    disabled = _cli(cli, running, "wol", "disable", str(nodes[1].id), "--json")
    assert disabled.exit_code == 0, disabled.stderr
    assert json.loads(disabled.stdout)["nic"]["supports_wake_on"] is None


def test_commands_are_argument_lists_even_with_odd_names(
    settings: Settings, session: Session, lab_factory: Any, tmp_path: Path
) -> None:
    """A NetworkManager connection name with spaces and quotes reaches nmcli as one argument."""
    running = lab_factory([NodeSpec(network_service="NetworkManager", nic_wake_on_default="d")], ssh=True)
    _, [node] = register_lab(session, running)
    running.power_on_all()
    _trust_all(settings, running)
    system = running.nodes[0].system
    assert system is not None
    state = system.network_manager()
    marker = tmp_path / "pwned"
    name = f"Wired 'conn' $(touch {marker}); `touch {marker}`"
    state["devices"]["veth0"]["connection"] = name
    state["connections"] = {name: {"802-3-ethernet.wake-on-lan": "default"}}
    (system.state / "nm.json").write_text(json.dumps(state))
    with enter_netns(running.lab.orch):
        sessions = sessionmaker(session.get_bind(), expire_on_commit=False)
        change = asyncio.run(set_nic_wol(sessions, settings, node.id, enable=True, actor=Actor("test")))
    assert change.nic is not None and change.nic["persistence"] == "NetworkManager"
    assert system.network_manager()["connections"][name]["802-3-ethernet.wake-on-lan"] == "magic"
    [modify] = [c["argv"] for c in system.calls("nmcli") if "modify" in c["argv"]]
    assert modify == ["connection", "modify", name, "802-3-ethernet.wake-on-lan", "magic"]
    assert not marker.exists()
