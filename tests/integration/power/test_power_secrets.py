"""No secret (Proxmox token, IPMI or Redfish password) in any API response, CLI output or log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.platform.settings import Settings
from support.peers import IpmiSim, PveServer, RedfishEmulator

WRONG_TOKEN = "wrong-token-5e1d7c0a"
WRONG_IPMI = "wrong-ipmi-pw-77"
WRONG_REDFISH = "wrong-redfish-pw-91"


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[PveServer, IpmiSim, RedfishEmulator]]:
    """All three peers at once."""
    for name in ("pve", "ipmi", "redfish"):
        (tmp_path / name).mkdir()
    pve = PveServer(tmp_path / "pve")
    pve.pve.add_vm(101, "vm1", status="stopped")
    ipmi = IpmiSim(tmp_path / "ipmi")
    redfish = RedfishEmulator(tmp_path / "redfish")
    yield pve, ipmi, redfish
    redfish.stop()
    ipmi.stop()
    pve.stop()


def test_no_secret_in_api_responses_cli_output_or_logs(
    settings: Settings,
    session: Session,
    client: TestClient,
    cli: CliRunner,
    peers: tuple[PveServer, IpmiSim, RedfishEmulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pve, ipmi, redfish = peers
    caplog.set_level(logging.DEBUG)  # every library's debug lines too (proxmoxer, urllib3, httpx)
    secrets = [PveServer.TOKEN_SECRET, IpmiSim.PASSWORD, RedfishEmulator.PASSWORD]
    secrets += [WRONG_TOKEN, WRONG_IPMI, WRONG_REDFISH]
    seen: list[str] = []

    def cli_run(*args: str, stdin: str | None = None) -> Any:
        result = CliRunner().invoke(app, list(args), input=stdin)
        seen.append(result.stdout + result.stderr)
        return result

    def api(method: str, url: str, **kwargs: Any) -> Any:
        response = client.request(method, url, **kwargs)
        seen.append(response.text)
        return response

    host = ["proxmox", "add", "pve", "--host", "127.0.0.1", "--port", str(pve.port), "--ca-file", pve.cafile]
    assert (
        cli_run(
            *host, "--token-id", PveServer.TOKEN_ID, "--secret", "-", stdin=PveServer.TOKEN_SECRET
        ).exit_code
        == 0
    )
    bad_host = {"name": "pve-bad", "host": "127.0.0.1", "port": pve.port, "token_id": PveServer.TOKEN_ID}
    assert (
        api(
            "POST", "/api/proxmox-hosts", json=bad_host | {"secret": WRONG_TOKEN, "ca_file": pve.cafile}
        ).status_code
        == 201
    )

    ids = {}
    for name in ("vm", "vm-bad", "ipmi", "ipmi-bad", "redfish", "redfish-bad"):
        ids[name] = create_node(session, NodeCreate(hostname=name, ip_address="10.0.0.5")).id
    assert (
        cli_run(
            "wol",
            "configure",
            str(ids["vm"]),
            "--virtual",
            "--proxmox-vm-id",
            "101",
            "--proxmox-host-id",
            "1",
        ).exit_code
        == 0
    )
    api(
        "PUT",
        f"/api/nodes/{ids['vm-bad']}/wol/configure",
        json={"is_virtual_node": True, "proxmox_vm_id": 101, "proxmox_host_id": 2},
    )
    for name, password in (("ipmi", IpmiSim.PASSWORD), ("ipmi-bad", WRONG_IPMI)):
        configure = ["wol", "configure", str(ids[name]), "--method", "ipmi", "--bmc-address", "127.0.0.1"]
        configure += [
            "--bmc-port",
            str(ipmi.port),
            "--bmc-username",
            IpmiSim.USER,
            "--bmc-password",
            password,
        ]
        assert cli_run(*configure, "--json").exit_code == 0
    for name, password in (("redfish", RedfishEmulator.PASSWORD), ("redfish-bad", WRONG_REDFISH)):
        body = {"wol_method": "redfish", "redfish_url": redfish.url, "bmc_username": RedfishEmulator.USER}
        body |= {"bmc_password": password, "bmc_ca_file": str(redfish.cafile)}
        assert api("PUT", f"/api/nodes/{ids[name]}/wol/configure", json=body).status_code == 200

    # Successful and failing power actions through both adapters.
    for name, node_id in ids.items():
        good = not name.endswith("-bad")
        response = api("POST", f"/api/nodes/{node_id}/power", json={"action": "on", "timeout": 15})
        assert response.json()["status"] == ("succeeded" if good else "failed"), response.text
        api("GET", f"/api/nodes/{node_id}/power", params={"refresh": True})
        assert (cli_run("node", "power", str(node_id), "status").exit_code == 0) is good
        cli_run("node", "power", str(node_id), "off", "--json")
        cli_run("node", "show", str(node_id), "--json")
        cli_run("wol", "status", str(node_id), "--json")
        api("GET", f"/api/nodes/{node_id}")
        api("GET", f"/api/nodes/{node_id}/wol/status")
    for command in (
        ["proxmox", "list"],
        ["proxmox", "list", "--json"],
        ["proxmox", "show", "1"],
        ["proxmox", "test", "2"],
    ):
        cli_run(*command)
    for url in ("/api/proxmox-hosts", "/api/proxmox-hosts/1", "/api/nodes", "/api/operations?limit=200"):
        api("GET", url)
    api("POST", "/api/proxmox-hosts/2/test")
    # The failures really happened and were reported (so the check below looked at real error paths).
    everything = "\n".join(seen)
    for expected in ("rejected the credentials", "refused the login", "Redfish service"):
        assert expected in everything

    logs = settings.log_file.read_text() + "\n".join(record.getMessage() for record in caplog.records)
    assert "operation" in logs and "proxmox" in logs.lower()
    for secret in secrets:
        assert secret not in everything, f"a secret leaked into an API response or CLI output: {secret[:4]}…"
        assert secret not in logs, f"a secret leaked into the logs: {secret[:4]}…"
    # What people see instead: that a secret is set.
    assert json.loads(client.get(f"/api/nodes/{ids['ipmi']}").text)["bmc_password_set"] is True
    assert client.get("/api/proxmox-hosts/1").json()["secret_set"] is True
