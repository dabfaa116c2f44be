"""Secrets stay bound to where they go: moving a Proxmox host, a BMC or a SecureOn node's packets
elsewhere needs the secret again in the same request, or an admin (API, web form and CLI alike)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mko.cli.root import app

HOST = {"name": "pve", "host": "pve1.lan", "token_id": "mko@pve!power", "secret": "s3cr3t-token"}
IPMI = {
    "hostname": "bmc-1",
    "ip_address": "10.0.0.21",
    "wol_method": "ipmi",
    "bmc_address": "10.0.1.21",
    "bmc_username": "admin",
    "bmc_password": "bmc-secret",
}
REDFISH = {
    "hostname": "rf-1",
    "ip_address": "10.0.0.22",
    "wol_method": "redfish",
    "redfish_url": "https://10.0.1.22",
    "bmc_username": "admin",
    "bmc_password": "bmc-secret",
}
SECUREON = {
    "hostname": "so-1",
    "ip_address": "10.0.0.23",
    "wol_mac_address": "02:00:00:00:00:23",
    "wol_enabled": True,
    "wol_secureon": "01:02:03:04:05:06",
}


def _refused(response: Any, field: str) -> str:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][-1] == field
    message = str(error["msg"])
    assert "again in the same request" in message and "admin" in message
    return message


def test_proxmox_host_address_port_and_tls_need_the_secret_again(
    client: TestClient, operator: TestClient
) -> None:
    assert client.post("/api/proxmox-hosts", json=HOST).status_code == 201
    for change in (
        {"host": "evil.example"},
        {"port": 8443},
        {"verify_tls": False},
        {"fingerprint": "ab" * 32},
    ):
        message = _refused(operator.patch("/api/proxmox-hosts/1", json=change), "secret")
        assert next(iter(change)) in message
    assert operator.get("/api/proxmox-hosts/1").json()["host"] == "pve1.lan"  # nothing was written
    # A change that does not move the secret needs nothing; the same value is no change.
    assert (
        operator.patch("/api/proxmox-hosts/1", json={"name": "pve-a", "host": "pve1.lan"}).status_code == 200
    )
    # With the secret given again, or by an admin, the host moves.
    moved = operator.patch("/api/proxmox-hosts/1", json={"host": "pve2.lan", "secret": "s3cr3t-token"})
    assert moved.status_code == 200 and moved.json()["host"] == "pve2.lan"
    assert client.patch("/api/proxmox-hosts/1", json={"port": 8443}).json()["port"] == 8443


@pytest.mark.parametrize(
    ("node", "change", "moved_field"),
    [
        (IPMI, {"bmc_address": "10.9.9.9"}, "bmc_address"),
        (IPMI, {"bmc_port": 6230}, "bmc_port"),
        (REDFISH, {"redfish_url": "https://10.9.9.9"}, "redfish_url"),
        (REDFISH, {"bmc_verify_tls": False}, "bmc_verify_tls"),
        (IPMI, {"wol_method": "redfish", "redfish_url": "https://10.9.9.9"}, "redfish_url"),
    ],
)
def test_bmc_address_url_and_tls_need_the_password_again(
    client: TestClient, operator: TestClient, node: dict[str, Any], change: dict[str, Any], moved_field: str
) -> None:
    node_id = client.post("/api/nodes", json=node).json()["id"]
    assert moved_field in _refused(operator.patch(f"/api/nodes/{node_id}", json=change), "bmc_password")
    assert moved_field in _refused(
        operator.put(f"/api/nodes/{node_id}/wol/configure", json=change), "bmc_password"
    )
    again = operator.patch(f"/api/nodes/{node_id}", json=change | {"bmc_password": "bmc-secret"})
    assert again.status_code == 200, again.text
    # Nothing that leaves the password where it is needs it: the host name, the user.
    assert operator.patch(f"/api/nodes/{node_id}", json={"description": "rack 2"}).status_code == 200


def test_an_admin_may_move_a_bmc_without_the_password(client: TestClient) -> None:
    node_id = client.post("/api/nodes", json=IPMI).json()["id"]
    moved = client.patch(f"/api/nodes/{node_id}", json={"bmc_address": "10.9.9.9"})
    assert moved.status_code == 200 and moved.json()["bmc_address"] == "10.9.9.9"


def test_secureon_packets_are_not_redirected_without_the_password(
    client: TestClient, operator: TestClient
) -> None:
    node_id = client.post("/api/nodes", json=SECUREON).json()["id"]
    # A unicast "broadcast" address, another subnet's broadcast (routed as unicast until its last
    # router), or another site's agents would receive the password in every magic packet.
    for change in (
        {"wol_broadcast_address": "10.9.9.9"},
        {"wol_prefix_len": 16},
        {"ip_address": "10.9.9.9", "wol_prefix_len": 30},
        {"site": "branch"},
    ):
        message = _refused(operator.patch(f"/api/nodes/{node_id}", json=change), "wol_secureon")
        assert next(iter(change)) in message
    given = operator.put(
        f"/api/nodes/{node_id}/wol/configure",
        json={"wol_broadcast_address": "10.0.0.255", "wol_secureon": "01:02:03:04:05:06"},
    )
    assert given.status_code == 200, given.text
    # Port and interface do not change who receives the packet.
    assert operator.put(f"/api/nodes/{node_id}/wol/configure", json={"wol_port": 7}).status_code == 200


def test_web_form_and_cli_follow_the_same_rule(client: TestClient, web: Any, cli: CliRunner) -> None:
    node_id = client.post("/api/nodes", json=SECUREON).json()["id"]
    form = {"wol_mac_address": SECUREON["wol_mac_address"], "wol_enabled": "on", "kind": "physical"}
    page = web.form(f"/nodes/{node_id}/wol/configure", form | {"wol_broadcast_address": "10.9.9.9"})
    assert page.status_code == 422 and "again in the same request" in page.text
    saved = web.form(
        f"/nodes/{node_id}/wol/configure",
        form | {"wol_broadcast_address": "10.9.9.9", "wol_secureon": "01:02:03:04:05:06"},
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text

    bmc_id = client.post("/api/nodes", json=IPMI).json()["id"]
    refused = cli.invoke(app, ["wol", "configure", str(bmc_id), "--bmc-address", "10.9.9.9"])
    assert refused.exit_code == 2 and "again in the same request" in " ".join(refused.stderr.split())
    given = cli.invoke(
        app, ["wol", "configure", str(bmc_id), "--bmc-address", "10.9.9.9", "--bmc-password", "bmc-secret"]
    )
    assert given.exit_code == 0, given.stderr
    assert client.post("/api/proxmox-hosts", json=HOST).status_code == 201
    host = cli.invoke(app, ["proxmox", "update", "1", "--host", "pve9.lan"])
    assert host.exit_code == 2 and "secret" in host.stderr


def test_a_cluster_moves_its_nodes_secureon_passwords_to_another_site_only_with_an_admin(
    client: TestClient, operator: TestClient
) -> None:
    cluster = client.post("/api/clusters", json={"name": "home"}).json()["id"]
    node = client.post("/api/nodes", json=SECUREON | {"cluster_id": cluster}).json()["id"]
    refused = operator.patch(f"/api/clusters/{cluster}", json={"site": "branch"})
    assert refused.status_code == 422 and f"{node} (so-1)" in refused.json()["detail"][0]["msg"]
    # The node moves first, its password given again; then the cluster may follow.
    moved = operator.patch(f"/api/nodes/{node}", json={"site": "branch", "wol_secureon": "01:02:03:04:05:06"})
    assert moved.status_code == 200, moved.text
    assert operator.patch(f"/api/clusters/{cluster}", json={"site": "branch"}).status_code == 200
    assert client.patch(f"/api/clusters/{cluster}", json={"site": "other"}).status_code == 200
