"""Proxmox host inventory and node power commands: input checks, refusals and their reasons."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mko.cli.root import app

HOST = {"name": "pve", "host": "pve1.lan", "token_id": "mko@pve!power", "secret": "s3cr3t-token"}


def _field(response: Any) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["detail"][0]["loc"][-1])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"token_id": "mko@pve"}, "token_id"),
        ({"token_id": "mko!power"}, "token_id"),
        ({"token_id": None}, "token_id"),
        ({"username": "root@pam"}, "username"),
        ({"host": "bad host"}, "host"),
        ({"port": 0}, "port"),
        ({"fingerprint": "AB:CD"}, "fingerprint"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"secret": " "}, "secret"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_proxmox_host_is_422_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    assert _field(client.post("/api/proxmox-hosts", json=HOST | change)) == field
    assert client.get("/api/proxmox-hosts").json() == []


def test_proxmox_host_crud_never_returns_the_secret(client: TestClient, tmp_path: Path) -> None:
    ca = tmp_path / "pve-root-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    created = client.post("/api/proxmox-hosts", json=HOST | {"ca_file": str(ca)})
    assert created.status_code == 201, created.text
    public = created.json()
    assert public["auth"] == "token" and public["secret_set"] is True and public["port"] == 8006
    assert "s3cr3t-token" not in created.text and "secret" not in {k for k in public if k != "secret_set"}
    assert client.post("/api/proxmox-hosts", json=HOST).status_code == 409
    fingerprint = "ab" * 32
    changed = client.patch("/api/proxmox-hosts/1", json={"fingerprint": fingerprint, "ca_file": None})
    assert changed.json()["fingerprint"] == ":".join(["AB"] * 32), changed.text
    assert (
        _field(client.patch("/api/proxmox-hosts/1", json={"username": "root@pam", "token_id": None}))
        == "secret"
    )
    node = client.post(
        "/api/nodes",
        json={
            "hostname": "vm1",
            "ip_address": "10.0.0.7",
            "is_virtual_node": True,
            "proxmox_vm_id": 101,
            "proxmox_host_id": 1,
        },
    ).json()
    refused = client.delete("/api/proxmox-hosts/1")
    assert refused.status_code == 409 and f"{node['id']} (vm1)" in refused.json()["detail"]
    assert client.get("/api/proxmox-hosts/1").json()["node_count"] == 1
    client.delete(f"/api/nodes/{node['id']}")
    assert client.delete("/api/proxmox-hosts/1").status_code == 204
    assert client.get("/api/proxmox-hosts/1").status_code == 404


def test_proxmox_cli_add_list_show_remove(cli: CliRunner, settings: Any) -> None:
    added = cli.invoke(
        app,
        ["proxmox", "add", "pve", "--host", "10.0.0.2", "--token-id", "mko@pve!power", "--secret", "-"],
        input="tok-value-123\n",
    )
    assert added.exit_code == 0, added.output
    listed = cli.invoke(app, ["proxmox", "list", "--json"])
    assert '"secret_set": true' in listed.stdout and "tok-value-123" not in listed.stdout
    assert "tok-value-123" not in cli.invoke(app, ["proxmox", "show", "1"]).stdout
    bad = cli.invoke(
        app, ["proxmox", "add", "x", "--host", "10.0.0.3", "--token-id", "nope", "--secret", "s"]
    )
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "token_id" in bad.stderr
    assert cli.invoke(app, ["proxmox", "remove", "1"]).exit_code == 0
    assert cli.invoke(app, ["proxmox", "remove", "1"]).exit_code == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_node_power_refuses_what_the_driver_cannot_do(client: TestClient, cli: CliRunner) -> None:
    port = _closed_port()
    node = client.post(
        "/api/nodes",
        json={
            "hostname": "pc1",
            "ip_address": "127.0.0.1",
            "wol_mac_address": "02:00:00:00:00:07",
            "probe_port": port,
        },
    ).json()
    refused = client.post(f"/api/nodes/{node['id']}/power", json={"action": "off"})
    assert refused.status_code == 409
    assert "cannot do 'off'" in refused.json()["detail"] and "Wake-on-LAN" in refused.json()["detail"]
    assert all(op["kind"] != "power_off" for op in client.get("/api/operations").json())
    assert _field(client.post(f"/api/nodes/{node['id']}/power", json={"action": "reboot"})) == "action"
    status = client.get(f"/api/nodes/{node['id']}/power").json()
    assert status["state"] == "unknown" and status["checked_at"] is None  # never read yet
    status = client.get(f"/api/nodes/{node['id']}/power", params={"refresh": "true"}).json()
    assert status["state"] == "off" and status["source"] == f"TCP probe of port {port}"
    assert status["actions"] == ["on"]
    assert client.get(f"/api/nodes/{node['id']}/power").json()["state"] == "off"  # the last reading
    cli_refused = cli.invoke(app, ["node", "power", str(node["id"]), "soft"])
    assert cli_refused.exit_code == 1 and cli_refused.stderr.count("\n") == 1
    assert "cannot do 'soft'" in cli_refused.stderr
    assert cli.invoke(app, ["node", "power", str(node["id"]), "reboot"]).exit_code == 2


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--method", "redfish", "--redfish-url", "https://admin:pw@10.0.0.5"], "redfish_url"),
        (["--method", "redfish", "--redfish-url", "https://10.0.0.5"], "bmc_username"),
        (["--method", "ipmi", "--bmc-address", "10.0.0.5", "--bmc-username", "admin"], "bmc_password"),
        (["--method", "ipmi", "--bmc-address", "bmc 1"], "bmc_address"),
        (["--bmc-port", "70000"], "bmc_port"),
        (["--bmc-ca-file", "/nonexistent.pem"], "bmc_ca_file"),
    ],
)
def test_bmc_settings_checked_at_configure_time(
    client: TestClient, cli: CliRunner, args: list[str], field: str
) -> None:
    node = client.post("/api/nodes", json={"hostname": "srv1", "ip_address": "10.0.0.8"}).json()
    result = cli.invoke(app, ["wol", "configure", str(node["id"]), *args])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert field in result.stderr
    assert client.get(f"/api/nodes/{node['id']}").json() == node
