"""A Proxmox host node configured without what its power method needs is refused by the API (422 naming
the field), the CLI (exit 2, one line naming the option) and the web form (the field's error), and its
BMC password stays bound to the BMC when its power method changes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mko.cli.root import app

ENDPOINT = {"name": "pve", "host": "pve1.lan", "token_id": "mko@pve!power", "secret": "s3cr3t-token"}
BMC = {"bmc_address": "10.0.1.5", "bmc_username": "admin", "bmc_password": "bmc-secret"}


def _host(**values: Any) -> dict[str, Any]:
    own = {"proxmox_host_id": 1, "proxmox_host_node": "pve1", "proxmox_host_power_method": "ipmi"}
    return {"hostname": "pve1", "ip_address": "10.0.0.5", "wol_method": "proxmox_host", **own} | values


@pytest.fixture
def endpoint(client: TestClient) -> None:
    assert client.post("/api/proxmox-hosts", json=ENDPOINT).status_code == 201


def _error(response: Any) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    return str(error["loc"][-1]), str(error["msg"])


def test_api_refuses_a_host_without_its_power_methods_fields(client: TestClient, endpoint: None) -> None:
    field, message = _error(client.post("/api/nodes", json=_host(bmc_username="admin")))
    assert field == "bmc_address" and "powered on by 'ipmi'" in message
    field, _ = _error(client.post("/api/nodes", json=_host(proxmox_host_power_method="snmp_pdu")))
    assert field == "snmp_host"
    assert client.get("/api/nodes").json() == []  # nothing written

    node_id = client.post("/api/nodes", json=_host(**BMC)).json()["id"]
    # A partial update is judged with what is stored: the outlet the new method needs is missing.
    switch = {"proxmox_host_power_method": "snmp_pdu", "snmp_host": "pdu.lan"}
    for response in (
        client.patch(f"/api/nodes/{node_id}", json=switch),
        client.put(f"/api/nodes/{node_id}/wol/configure", json=switch),
    ):
        assert _error(response)[0] == "snmp_outlet"
    shown = client.get(f"/api/nodes/{node_id}").json()
    assert shown["proxmox_host_power_method"] == "ipmi" and shown.get("snmp_host") is None
    taken = client.put(
        f"/api/nodes/{node_id}/wol/configure",
        json=switch | {"snmp_outlet": 4, "snmp_community": "private"},
    )
    assert taken.status_code == 200, taken.text


def test_the_bmc_password_follows_the_method_that_sends_it(
    client: TestClient, operator: TestClient, endpoint: None
) -> None:
    """Switching a host from IPMI to Redfish sends its BMC password to the Redfish URL: the password
    is needed again (as for a plain node), while making an IPMI node the host it is keeps it."""
    plain = client.post(
        "/api/nodes", json={"hostname": "pve1", "ip_address": "10.0.0.5", "wol_method": "ipmi"} | BMC
    ).json()["id"]
    to_host = {k: v for k, v in _host().items() if k not in ("hostname", "ip_address")}
    same_bmc = operator.put(f"/api/nodes/{plain}/wol/configure", json=to_host)
    assert same_bmc.status_code == 200, same_bmc.text
    stored = operator.patch(f"/api/nodes/{plain}", json={"redfish_url": "https://10.0.1.5"})
    assert stored.status_code == 200, stored.text  # another method's setting: nothing is sent there
    field, message = _error(
        operator.patch(f"/api/nodes/{plain}", json={"proxmox_host_power_method": "redfish"})
    )
    assert field == "bmc_password" and "proxmox_host_power_method" in message and "again" in message
    again = operator.patch(
        f"/api/nodes/{plain}", json={"proxmox_host_power_method": "redfish", "bmc_password": "bmc-secret"}
    )
    assert again.status_code == 200, again.text


def test_cli_names_the_option_to_pass(cli: CliRunner, client: TestClient, endpoint: None) -> None:
    add = ["node", "add", "pve1", "10.0.0.5", "--method", "proxmox_host", "--proxmox-host-node", "pve1"]
    refused = cli.invoke(app, [*add, "--proxmox-host-power-method", "ipmi", "--bmc-username", "admin"])
    assert refused.exit_code == 2 and refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert "powered on by 'ipmi'" in line and line.endswith("set bmc_address (--bmc-address)")
    assert client.get("/api/nodes").json() == []

    by_wol = [*add, "--proxmox-host-power-method", "ethernet", "--proxmox-host-id", "1", "--enable-wol"]
    refused = cli.invoke(app, by_wol)  # enabled: the packet needs its MAC, as a plain WoL node's does
    assert refused.exit_code == 2 and refused.stderr.strip().endswith("set wol_mac_address (--mac-address)")
    added = cli.invoke(app, [*by_wol, "--mac", "02:00:00:00:00:05"])
    assert added.exit_code == 0, added.stderr
    [shown] = client.get("/api/nodes").json()
    assert shown["wol_enabled"] is True and shown["proxmox_host_id"] == 1
    node_id = str(shown["id"])
    refused = cli.invoke(app, ["wol", "configure", node_id, "--proxmox-host-power-method", "ethernet-raw"])
    assert refused.exit_code == 2 and refused.stderr.strip().endswith("set wol_interface (--interface)")
    refused = cli.invoke(app, ["node", "update", node_id, "--proxmox-host-power-method", "redfish"])
    assert refused.exit_code == 2 and "(--redfish-url)" in refused.stderr
    taken = cli.invoke(app, ["wol", "configure", node_id, "--proxmox-host-power-method", "ethernet-raw",
                             "--interface", "eth0"])  # fmt: skip
    assert taken.exit_code == 0, taken.stderr
    assert client.get(f"/api/nodes/{node_id}").json()["proxmox_host_power_method"] == "ethernet-raw"


def test_web_form_shows_the_error_beside_the_field(client: TestClient, web: Any, endpoint: None) -> None:
    node_id = client.post("/api/nodes", json=_host(**BMC)).json()["id"]
    form = {"kind": "physical", "wol_method": "proxmox_host", "proxmox_host_id": "1"}
    form |= {"proxmox_host_node": "pve1", "proxmox_host_power_method": "snmp_pdu", "snmp_host": "pdu.lan"}
    page = web.form(f"/nodes/{node_id}/wol/configure", form)
    assert page.status_code == 422
    assert 'data-error-for="snmp_outlet"' in page.text and "powered on by &#39;snmp_pdu&#39;" in page.text
    assert client.get(f"/api/nodes/{node_id}").json()["proxmox_host_power_method"] == "ipmi"
