"""The seed's WoL endpoints and commands: configure, status, enable/disable, and their refusals."""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mko.cli.common import YOUNG_COLLECTION_THRESHOLD
from mko.cli.root import app
from mko.platform.settings import Settings

SEED_CONFIGURE = {
    "wol_enabled": True,
    "wol_mac_address": "aa:bb:cc:dd:ee:ff",
    "wol_method": "ethernet",
    "wol_port": 9,
    "wol_broadcast_address": "255.255.255.255",
}


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A UDP socket on loopback that receives what is sent to 127.255.255.255:<its port>."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


def _node(client: TestClient, hostname: str = "cp1", **fields: Any) -> dict[str, Any]:
    body = {"hostname": hostname, "ip_address": "127.0.0.1"} | fields
    response = client.post("/api/nodes", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_seed_configure_body_verbatim_then_only_sent_fields_change(client: TestClient) -> None:
    node = _node(client)
    response = client.put(f"/api/nodes/{node['id']}/wol/configure", json=SEED_CONFIGURE)
    assert response.status_code == 200, response.text
    assert {k: response.json()[k] for k in SEED_CONFIGURE} == SEED_CONFIGURE
    changed = client.put(f"/api/nodes/{node['id']}/wol/configure", json={"wol_port": 7}).json()
    assert (
        changed["wol_port"] == 7
        and changed["wol_mac_address"] == "aa:bb:cc:dd:ee:ff"
        and changed["wol_enabled"]
    )
    operations = client.get("/api/operations", params={"kind": "wol_configure"}).json()
    assert [op["parameters"] for op in operations] == [{"wol_port": 7}, SEED_CONFIGURE]
    assert operations[0]["summary"] == "changed wol_port"
    # The same values again change nothing, so nothing is recorded.
    again = client.put(f"/api/nodes/{node['id']}/wol/configure", json={**SEED_CONFIGURE, "wol_port": 7})
    assert again.status_code == 200, again.text
    assert len(client.get("/api/operations", params={"kind": "wol_configure"}).json()) == 2


def test_seed_virtual_node_form(client: TestClient, session: Any) -> None:
    from mko.platform.db.models.inventory import ProxmoxHost

    session.add(ProxmoxHost(name="pve", host="10.0.0.2"))
    session.commit()
    node = _node(client)
    body = {"is_virtual_node": True, "proxmox_vm_id": 101, "proxmox_host_id": 1}
    configured = client.put(f"/api/nodes/{node['id']}/wol/configure", json=body).json()
    assert configured["is_virtual_node"] is True and configured["wol_method"] == "proxmox"
    assert configured["proxmox_vm_id"] == 101
    status = client.get(f"/api/nodes/{node['id']}/wol/status").json()
    assert status["configured"] is True and status["driver_available"] is True
    physical = client.put(f"/api/nodes/{node['id']}/wol/configure", json={"is_virtual_node": False}).json()
    assert physical["wol_method"] == "ethernet"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"wol_mac_address": "aa:bb:cc:dd:ee"}, "wol_mac_address"),
        ({"wol_port": 0}, "wol_port"),
        ({"wol_port": 70000}, "wol_port"),
        ({"wol_broadcast_address": "239.0.0.1"}, "wol_broadcast_address"),
        ({"wol_enabled": True}, "wol_mac_address"),
        ({"wol_method": "ethernet-raw"}, "wol_interface"),
        ({"wol_interface": "eth0; reboot"}, "wol_interface"),
        ({"wol_secureon": "12:34"}, "wol_secureon"),
        ({"is_virtual_node": True, "wol_method": "ethernet"}, "wol_method"),
        ({"proxmox_host_id": 9}, "proxmox_host_id"),
        ({"wol_prefix_len": 33}, "wol_prefix_len"),
    ],
)
def test_bad_configure_is_422_and_changes_nothing(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    node = _node(client)
    response = client.put(f"/api/nodes/{node['id']}/wol/configure", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field
    assert client.get(f"/api/nodes/{node['id']}").json() == node
    assert client.get("/api/operations").json() == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_enable_disable_and_refusals(client: TestClient) -> None:
    # Nothing listens on the node's SSH port: enabling must fail and change nothing (the NIC side is
    # tested against real sshd in tests/integration/nic/test_nic_lab.py).
    node = _node(client, ssh_port=_closed_port())
    flag_only = {"flag_only": True}
    refused = client.post(f"/api/nodes/{node['id']}/wol/enable", json=flag_only)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "wol_mac_address"
    client.put(f"/api/nodes/{node['id']}/wol/configure", json={"wol_mac_address": "02:00:00:00:00:01"})
    wake_disabled = client.post(f"/api/nodes/{node['id']}/wol/wake")
    assert wake_disabled.status_code == 409 and "disabled" in wake_disabled.json()["detail"]
    unreachable = client.post(f"/api/nodes/{node['id']}/wol/enable")
    assert unreachable.status_code == 502 and "cannot connect" in unreachable.json()["detail"]
    assert "flag_only" in unreachable.json()["detail"]
    assert client.get(f"/api/nodes/{node['id']}").json()["wol_enabled"] is False
    enabled = client.post(f"/api/nodes/{node['id']}/wol/enable", json=flag_only).json()
    assert enabled["wol_enabled"] is True and enabled["operation_status"] == "succeeded"
    assert "flag only" in enabled["summary"] and enabled["nic"] is None
    assert client.post(f"/api/nodes/{node['id']}/wol/disable", json=flag_only).json()["wol_enabled"] is False
    operations = client.get("/api/operations").json()
    assert [(op["kind"], op["status"]) for op in operations] == [
        ("wol_disable", "succeeded"),
        ("wol_enable", "succeeded"),
        ("wol_enable", "failed"),
        ("wol_configure", "succeeded"),
        ("wol_enable", "failed"),
    ]
    assert client.post(f"/api/nodes/{node['id']}/wol/enable", json={"flag_only": "x"}).status_code == 422
    assert client.post("/api/nodes/99/wol/wake").status_code == 404
    assert client.post("/api/clusters/99/wol/wake").status_code == 404
    assert client.get("/api/nodes/99/wol/status").status_code == 404
    bad = client.post(f"/api/nodes/{node['id']}/wol/wake", json={"retries": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "retries"


def test_wake_node_over_loopback_records_operation(client: TestClient, receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    node = _node(
        client,
        wol_enabled=True,
        wol_mac_address="02:00:00:00:00:07",
        wol_port=port,
        wol_broadcast_address="127.255.255.255",
        wol_secureon="01:02:03:04:05:06",
    )
    response = client.post(f"/api/nodes/{node['id']}/wol/wake", json={"retries": 2, "delay": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["nodes"][0]["attempts"] == 2
    packets = [receiver.recv(200) for _ in range(2)]
    assert packets == [b"\xff" * 6 + bytes.fromhex("020000000007") * 16 + bytes.fromhex("010203040506")] * 2
    operation = client.get(body["operation_url"]).json()
    assert operation["actor"] == "token:test-admin" and operation["source"] == "testclient"
    assert operation["steps"][0]["status"] == "succeeded"
    status = client.get(f"/api/nodes/{node['id']}/wol/status").json()
    assert status["last_wake"]["state"] == "sent" and status["secureon_set"] is True
    assert "01:02:03" not in json.dumps(status) and "01:02:03" not in json.dumps(operation)


def test_cluster_wake_skips_disabled_nodes_and_409_when_none(
    client: TestClient, receiver: socket.socket
) -> None:
    port = receiver.getsockname()[1]
    cluster = client.post("/api/clusters", json={"name": "home"}).json()
    assert client.post(f"/api/clusters/{cluster['id']}/wol/wake").status_code == 409
    common = {"cluster_id": cluster["id"], "wol_port": port, "wol_broadcast_address": "127.255.255.255"}
    _node(client, "off1", wol_mac_address="02:00:00:00:00:02", **common)
    assert client.post(f"/api/clusters/{cluster['id']}/wol/wake").status_code == 409
    _node(client, "on1", wol_enabled=True, wol_mac_address="02:00:00:00:00:03", **common)
    body = client.post(f"/api/clusters/{cluster['id']}/wol/wake", json={"retries": 1}).json()
    assert body["status"] == "partial"
    assert [n["hostname"] for n in body["nodes"]] == ["on1"]
    assert "disabled" in body["skipped"][0]["reason"]
    assert receiver.recv(200)[6:12] == bytes.fromhex("020000000003")


def test_cli_configure_status_enable_disable(cli: CliRunner, settings: Settings) -> None:
    def run(*args: str) -> Any:
        return cli.invoke(app, list(args))

    assert run("node", "add", "w1", "10.0.0.21").exit_code == 0
    configured = run(
        "wol",
        "configure",
        "1",
        "--mac-address",
        "aa:bb:cc:dd:ee:ff",
        "--method",
        "ethernet",
        "--port",
        "9",
        "--broadcast",
        "255.255.255.255",
        "--enable",
        "--physical",
        "--json",
    )
    assert configured.exit_code == 0, configured.stderr
    assert json.loads(configured.stdout)["wol_enabled"] is True
    status = json.loads(run("wol", "status", "1", "--json").stdout)
    assert status["mac_address"] == "aa:bb:cc:dd:ee:ff" and status["enabled"] is True
    # 10.0.0.21 is made up: only mko's flag changes here (the NIC side runs against lab nodes).
    assert json.loads(run("wol", "disable", "1", "--flag-only", "--json").stdout)["wol_enabled"] is False
    assert json.loads(run("wol", "enable", "1", "--flag-only", "--json").stdout)["wol_enabled"] is True
    only_port = json.loads(run("wol", "configure", "1", "--port", "7", "--json").stdout)
    assert only_port["wol_port"] == 7 and only_port["wol_mac_address"] == "aa:bb:cc:dd:ee:ff"
    same = run("wol", "configure", "1", "--port", "7")
    assert same.exit_code == 0 and "nothing changed" in same.stdout and "wol_port" in same.stdout
    for args, field in [
        (("wol", "configure", "1", "--mac-address", "nope"), "wol_mac_address"),
        (("wol", "configure", "1", "--port", "0"), "wol_port"),
        (("wol", "configure", "1", "--port", "70000"), "wol_port"),
        (("wol", "configure", "1", "--broadcast", "0.0.0.0"), "wol_broadcast_address"),
        (("wol", "configure", "1"), "at least one option"),
        (("wol", "wake-node", "1", "--retries", "0"), "retries"),
        (("wol", "status", "9"), "node 9 not found"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, (args, result.stdout)
        assert len(result.stderr.strip().splitlines()) == 1 and field in result.stderr, (args, result.stderr)
    assert json.loads(run("node", "show", "1", "--json").stdout)["wol_port"] == 7
    disabled = run("wol", "disable", "1", "--flag-only")
    assert disabled.exit_code == 0
    refused = run("wol", "wake-node", "1")
    assert refused.exit_code == 2 and "disabled" in refused.stderr


def test_cli_send_ad_hoc(cli: CliRunner, settings: Settings, receiver: socket.socket) -> None:
    port = str(receiver.getsockname()[1])
    result = cli.invoke(
        app,
        [
            "wol",
            "send",
            "AA-BB-CC-DD-EE-01",
            "--broadcast",
            "127.255.255.255",
            "--port",
            port,
            "--count",
            "2",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert [receiver.recv(200)[6:12] for _ in range(2)] == [bytes.fromhex("aabbccddee01")] * 2
    bad = cli.invoke(app, ["wol", "send", "01:00:5e:00:00:01"])
    assert bad.exit_code == 2 and "multicast" in bad.stderr


def test_a_burst_of_wakes_of_one_node_joins_the_running_one(
    client: TestClient, cli: CliRunner, receiver: socket.socket
) -> None:
    port = receiver.getsockname()[1]
    node = _node(
        client,
        wol_enabled=True,
        wol_mac_address="02:00:00:00:00:09",
        wol_port=port,
        wol_broadcast_address="127.255.255.255",
        probe_port=1,
    )
    client.app.state.settings = client.app.state.settings.model_copy(update={"api_sync_wait": 0.0})  # type: ignore[attr-defined]
    first = client.post(f"/api/nodes/{node['id']}/wol/wake", json={"wait": True, "timeout": 30})
    assert first.status_code == 202 and first.json()["coalesced"] is False
    again = client.post(f"/api/nodes/{node['id']}/wol/wake", json={"wait": True, "timeout": 30})
    assert again.status_code == 202 and again.json()["coalesced"] is True
    assert again.json()["operation_id"] == first.json()["operation_id"]
    # The CLI coalesces too (one service decides): it joins, sends nothing, and says so.
    joined = cli.invoke(app, ["wol", "wake-node", str(node["id"]), "--json"])
    assert joined.exit_code == 0, joined.stderr
    answer = json.loads(joined.stdout)
    assert answer["coalesced"] is True and answer["operation_id"] == first.json()["operation_id"]
    assert answer["status"] == "running"
    wakes = client.get("/api/operations", params={"kind": "wol_wake_node"}).json()
    assert len(wakes) == 1  # one operation, one stream of packets


def test_overlapping_cluster_wakes_join_from_the_api_and_the_cli(
    client: TestClient, cli: CliRunner, receiver: socket.socket
) -> None:
    cluster = client.post("/api/clusters", json={"name": "home"}).json()
    _node(
        client,
        cluster_id=cluster["id"],
        wol_enabled=True,
        wol_mac_address="02:00:00:00:00:0a",
        wol_port=receiver.getsockname()[1],
        wol_broadcast_address="127.255.255.255",
        probe_port=1,  # never answers: the wake keeps running until its timeout
    )
    client.app.state.settings = client.app.state.settings.model_copy(update={"api_sync_wait": 0.0})  # type: ignore[attr-defined]
    url = f"/api/clusters/{cluster['id']}/wol/wake"
    first = client.post(url, json={"wait": True, "timeout": 3})
    assert first.status_code == 202 and first.json()["coalesced"] is False
    again = client.post(url, json={"wait": True, "timeout": 3})
    assert again.json()["coalesced"] is True and again.json()["operation_id"] == first.json()["operation_id"]
    # A person at the CLI joins the same wake and is told its result when it ends.
    joined = cli.invoke(app, ["wol", "wake-cluster", str(cluster["id"]), "--wait", "--timeout", "3"])
    assert f"under way (operation {first.json()['operation_id']}): joined it" in joined.stdout
    assert joined.exit_code == 1 and "not_up" in joined.stdout
    assert len(client.get("/api/operations", params={"kind": "wol_wake_cluster"}).json()) == 1


def test_cli_cluster_wake_prints_counts_and_only_the_nodes_needing_attention(
    client: TestClient, cli: CliRunner, receiver: socket.socket
) -> None:
    port = receiver.getsockname()[1]
    cluster = client.post("/api/clusters", json={"name": "rack"}).json()
    common = {"cluster_id": cluster["id"], "wol_port": port, "wol_broadcast_address": "127.255.255.255"}
    for i in range(1, 4):
        _node(client, f"up{i}", wol_enabled=True, wol_mac_address=f"02:00:00:00:01:0{i}", **common)
    _node(client, "off1", wol_mac_address="02:00:00:00:01:09", **common)
    args = ["wol", "wake-cluster", str(cluster["id"]), "--retries", "1", "--delay", "0"]
    summary = cli.invoke(app, args)
    assert summary.exit_code == 1  # partial: one node was skipped
    lines = summary.stdout.splitlines()
    assert lines[0].endswith(": partial: 4 node(s): 3 sent, 1 skipped"), lines
    assert not any(line.split()[1:2] == ["up1"] for line in lines)  # a node that went well is not listed
    assert any("skipped" in line and "disabled" in line for line in lines)
    every = cli.invoke(app, [*args, "--verbose"])
    assert {f"up{i}" for i in range(1, 4)} <= set(every.stdout.split())
    as_json = json.loads(cli.invoke(app, [*args, "--json"]).stdout)
    assert len(as_json["nodes"]) == 3 and len(as_json["skipped"]) == 1


def test_a_cli_wake_keeps_what_it_loaded_out_of_full_collections(
    client: TestClient, cli: CliRunner, receiver: socket.socket
) -> None:
    # The modules and the wake's snapshots live until the wake ends: the collections its step rows set
    # off skip them (a tenth of a second after the last packet of a 10,000-node wake, docs/scale.md).
    cluster = client.post("/api/clusters", json={"name": "rack"}).json()
    _node(
        client,
        "n1",
        cluster_id=cluster["id"],
        wol_enabled=True,
        wol_mac_address="02:00:00:00:02:01",
        wol_port=receiver.getsockname()[1],
        wol_broadcast_address="127.255.255.255",
    )
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        result = cli.invoke(
            app, ["wol", "wake-cluster", str(cluster["id"]), "--retries", "1", "--delay", "0"]
        )
        assert result.exit_code == 0, result.output
        assert receiver.recv(1024)[:6] == b"\xff" * 6  # the packet went out
        assert gc.get_freeze_count() > 1_000
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
