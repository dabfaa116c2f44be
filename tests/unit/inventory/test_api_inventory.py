"""Clusters and nodes through the real HTTP app: round trips and every documented error."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

NODE = {"hostname": "cp1", "ip_address": "10.0.0.11", "role": "control-plane", "ssh_user": "ubuntu"}


def _cluster(client: TestClient, name: str = "home") -> dict[str, Any]:
    response = client.post("/api/clusters", json={"name": name, "description": "rack"})
    assert response.status_code == 201, response.text
    return response.json()


def _field_of_422(response: Any) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["detail"][0]["loc"][-1])


def test_cluster_round_trip(client: TestClient) -> None:
    cluster = _cluster(client)
    assert cluster["name"] == "home" and cluster["node_count"] == 0
    assert client.get(f"/api/clusters/{cluster['id']}").json()["description"] == "rack"
    renamed = client.patch(f"/api/clusters/{cluster['id']}", json={"name": "lab"}).json()
    assert renamed["name"] == "lab" and renamed["description"] == "rack"
    assert [c["name"] for c in client.get("/api/clusters").json()] == ["lab"]
    assert client.delete(f"/api/clusters/{cluster['id']}").status_code == 204
    assert client.get(f"/api/clusters/{cluster['id']}").status_code == 404


def test_duplicate_cluster_is_409(client: TestClient) -> None:
    _cluster(client)
    response = client.post("/api/clusters", json={"name": "home"})
    assert response.status_code == 409 and "home" in response.json()["detail"]
    assert len(client.get("/api/clusters").json()) == 1


def test_node_round_trip(client: TestClient) -> None:
    cluster = _cluster(client)
    created = client.post(
        "/api/nodes", json=NODE | {"cluster_id": cluster["id"], "wol_mac_address": "AA-BB-CC-DD-EE-01"}
    )
    assert created.status_code == 201, created.text
    node = created.json()
    assert node["wol_mac_address"] == "aa:bb:cc:dd:ee:01"
    assert node["wol_port"] == 9 and node["wol_method"] == "ethernet" and node["wol_enabled"] is False
    assert node["is_virtual_node"] is False
    listed = client.get("/api/nodes", params={"cluster_id": cluster["id"]}).json()
    assert [n["hostname"] for n in listed] == ["cp1"]
    assert client.get(f"/api/clusters/{cluster['id']}").json()["node_count"] == 1
    updated = client.patch(f"/api/nodes/{node['id']}", json={"ip_address": "10.0.0.21"}).json()
    assert (
        updated["ip_address"] == "10.0.0.21"
        and updated["hostname"] == "cp1"
        and updated["role"] == "control-plane"
    )
    assert client.delete(f"/api/clusters/{cluster['id']}").status_code == 409
    assert client.delete(f"/api/nodes/{node['id']}").status_code == 204
    assert client.get(f"/api/nodes/{node['id']}").status_code == 404
    assert client.get("/api/nodes").json() == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"wol_mac_address": "aa:bb:cc:dd:ee"}, "wol_mac_address"),
        ({"wol_mac_address": "01:00:5e:00:00:01"}, "wol_mac_address"),
        ({"wol_mac_address": "00:00:00:00:00:00"}, "wol_mac_address"),
        ({"wol_port": 0}, "wol_port"),
        ({"wol_port": 70000}, "wol_port"),
        ({"ssh_port": 70000}, "ssh_port"),
        ({"ip_address": "10.0.0.300"}, "ip_address"),
        ({"wol_broadcast_address": "224.0.0.1"}, "wol_broadcast_address"),
        ({"wol_broadcast_address": "0.0.0.0"}, "wol_broadcast_address"),
        ({"hostname": "bad host;reboot"}, "hostname"),
        ({"ssh_user": "root$(id)"}, "ssh_user"),
        ({"cluster_id": 99}, "cluster_id"),
        ({"role": "boss"}, "role"),
        ({"wol_enabled": True}, "wol_mac_address"),
        ({"wol_method": "ethernet-raw"}, "wol_interface"),
        ({"wol_method": "ipmi"}, "bmc_address"),
        ({"wol_method": "redfish", "redfish_url": "ftp://bmc"}, "redfish_url"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_node_input_is_422_naming_the_field_and_stores_nothing(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    response = client.post("/api/nodes", json=NODE | change)
    assert _field_of_422(response) == field
    assert client.get("/api/nodes").json() == []


def test_bad_update_changes_nothing(client: TestClient) -> None:
    node = client.post("/api/nodes", json=NODE | {"wol_mac_address": "aa:bb:cc:dd:ee:01"}).json()
    response = client.patch(f"/api/nodes/{node['id']}", json={"ip_address": "10.0.0.99", "wol_port": 0})
    assert _field_of_422(response) == "wol_port"
    assert client.get(f"/api/nodes/{node['id']}").json() == node


def test_duplicates_are_409_naming_the_clash(client: TestClient) -> None:
    client.post("/api/nodes", json=NODE | {"wol_mac_address": "aa:bb:cc:dd:ee:01"})
    same_name = client.post("/api/nodes", json=NODE | {"ip_address": "10.0.0.12"})
    assert same_name.status_code == 409 and "hostname" in same_name.json()["detail"]
    same_mac = client.post("/api/nodes", json=NODE | {"hostname": "cp2", "wol_mac_address": "AABBCCDDEE01"})
    assert same_mac.status_code == 409 and "aa:bb:cc:dd:ee:01" in same_mac.json()["detail"]
    assert len(client.get("/api/nodes").json()) == 1


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get("/api/nodes/42").status_code == 404
    assert client.patch("/api/nodes/42", json={"ip_address": "10.0.0.1"}).status_code == 404
    assert client.delete("/api/clusters/42").status_code == 404
    assert client.get("/api/operations/42").status_code == 404


def test_health_docs_and_dashboard(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/api/nodes" in client.get("/openapi.json").json()["paths"]
    # Pages need a web session, not a token: an API client is sent to the login form.
    page = client.get("/nodes", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
