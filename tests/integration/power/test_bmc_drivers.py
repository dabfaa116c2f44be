"""IPMI against OpenIPMI's ipmi_sim and Redfish against sushy-emulator: real BMC protocols on loopback."""

from __future__ import annotations

import json
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
from support.peers import IpmiSim, RedfishEmulator


@pytest.fixture
def ipmi(tmp_path: Path) -> Iterator[IpmiSim]:
    """ipmi_sim with its chassis powered off."""
    directory = tmp_path / "ipmi"
    directory.mkdir()
    sim = IpmiSim(directory)
    yield sim
    sim.stop()


@pytest.fixture
def redfish(tmp_path: Path) -> Iterator[RedfishEmulator]:
    """sushy-emulator over TLS with one system, powered off."""
    directory = tmp_path / "redfish"
    directory.mkdir()
    emulator = RedfishEmulator(directory)
    yield emulator
    emulator.stop()


def _cli(cli: CliRunner, *args: str, stdin: str | None = None) -> Any:
    return cli.invoke(app, list(args), input=stdin)


def _node(session: Session, hostname: str = "bmc-node") -> int:
    return create_node(session, NodeCreate(hostname=hostname, ip_address="10.0.0.50")).id


def _configure_ipmi(cli: CliRunner, node_id: int, sim: IpmiSim, password: str) -> Any:
    return _cli(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--method",
        "ipmi",
        "--bmc-address",
        "127.0.0.1",
        "--bmc-port",
        str(sim.port),
        "--bmc-username",
        sim.USER,
        "--bmc-password",
        "-",
        stdin=password + "\n",
    )


def test_ipmi_on_soft_off_and_status_are_visible_in_the_sim(
    session: Session, client: TestClient, cli: CliRunner, ipmi: IpmiSim
) -> None:
    node_id = _node(session)
    configured = _configure_ipmi(cli, node_id, ipmi, IpmiSim.PASSWORD)
    assert configured.exit_code == 0, configured.output
    status = _cli(cli, "node", "power", str(node_id), "status", "--json")
    assert json.loads(status.stdout)["state"] == "off", status.output

    on = _cli(cli, "node", "power", str(node_id), "on", "--json")
    assert on.exit_code == 0, on.output
    [outcome] = json.loads(on.stdout)["nodes"]
    assert (outcome["state"], outcome["verified_by"], outcome["attempts"]) == ("up", "query", 1)
    assert ipmi.power == "1" and "set power 1" in ipmi.requests
    assert client.get(f"/api/nodes/{node_id}/power", params={"refresh": True}).json()["state"] == "on"

    soft = client.post(f"/api/nodes/{node_id}/power", json={"action": "soft"})
    assert soft.status_code == 200, soft.text
    assert soft.json()["status"] == "succeeded" and soft.json()["nodes"][0]["state"] == "off"
    # A soft-off is the chassis "soft shutdown" (ACPI power button), not pulling the power.
    assert "set shutdown 1" in ipmi.requests and ipmi.power == "0"

    # A wake uses the node's driver transparently.
    assert _cli(cli, "wol", "enable", str(node_id)).exit_code == 0
    woken = _cli(cli, "wol", "wake-node", str(node_id), "--json")
    assert woken.exit_code == 0, woken.output
    assert json.loads(woken.stdout)["nodes"][0]["method"] == "ipmi" and ipmi.power == "1"

    off = client.post(f"/api/nodes/{node_id}/power", json={"action": "off"}).json()
    assert off["nodes"][0]["state"] == "off" and ipmi.requests.count("set power 0") == 1
    assert ipmi.power == "0"


def test_ipmi_bad_password_is_fatal(session: Session, cli: CliRunner, ipmi: IpmiSim) -> None:
    node_id = _node(session)
    assert _configure_ipmi(cli, node_id, ipmi, "wrong-password").exit_code == 0
    result = _cli(cli, "node", "power", str(node_id), "on", "--json")
    assert result.exit_code == 1
    [outcome] = json.loads(result.stdout)["nodes"]
    assert outcome["state"] == "failed" and "refused the login" in outcome["error"]
    assert ipmi.power == "0" and not any(r.startswith("set") for r in ipmi.requests)


def _redfish(redfish: RedfishEmulator) -> dict[str, str]:
    """The API body that gives a node the emulated system's Redfish service and login."""
    return {
        "wol_method": "redfish",
        "redfish_url": redfish.url,
        "bmc_username": redfish.USER,
        "bmc_password": redfish.PASSWORD,
    }


def test_redfish_on_and_graceful_shutdown_reach_the_emulated_system(
    session: Session, client: TestClient, redfish: RedfishEmulator
) -> None:
    node_id = _node(session)
    body = _redfish(redfish) | {"bmc_ca_file": str(redfish.cafile)}
    configured = client.put(f"/api/nodes/{node_id}/wol/configure", json=body)
    assert configured.status_code == 200, configured.text
    assert client.get(f"/api/nodes/{node_id}/power", params={"refresh": True}).json()["state"] == "off"

    on = client.post(f"/api/nodes/{node_id}/power", json={"action": "on", "timeout": 15}).json()
    assert on["status"] == "succeeded", on
    assert (on["nodes"][0]["state"], on["nodes"][0]["verified_by"]) == ("up", "query")
    assert redfish.resets == ["On"] and redfish.system()["PowerState"] == "On"
    # The verified outcome is the node's last known state: no query of the BMC to show it.
    assert client.get(f"/api/nodes/{node_id}/power").json()["state"] == "on"

    soft = client.post(f"/api/nodes/{node_id}/power", json={"action": "soft", "timeout": 15}).json()
    assert soft["status"] == "succeeded" and soft["nodes"][0]["state"] == "off", soft
    assert redfish.resets == ["On", "GracefulShutdown"] and redfish.system()["PowerState"] == "Off"


def test_redfish_verifies_tls_by_default(
    session: Session, client: TestClient, redfish: RedfishEmulator
) -> None:
    node_id = _node(session)
    body = _redfish(redfish)  # no CA file: the emulator's self-signed certificate does not verify
    assert client.put(f"/api/nodes/{node_id}/wol/configure", json=body).status_code == 200
    result = client.post(f"/api/nodes/{node_id}/power", json={"action": "on"}).json()
    assert result["status"] == "failed"
    assert "certificate verification failed" in result["nodes"][0]["error"]
    assert redfish.resets == []
    refused = client.get(f"/api/nodes/{node_id}/power", params={"refresh": True})
    assert refused.status_code == 502 and "certificate verification failed" in refused.json()["detail"]
