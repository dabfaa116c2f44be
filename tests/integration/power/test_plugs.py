"""Shelly (Gen1 and Gen2) and Tasmota drivers against fakes speaking the devices' real HTTP API, driven
through the CLI like a person would: configure, power on/off/cycle, status, and the failures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from support.plugs import ShellyGen1, ShellyGen2, Tasmota

PASSWORD = "plug-secret-7f3a"


@pytest.fixture
def node_id(session: Session) -> int:
    return create_node(session, NodeCreate(hostname="plugged", ip_address="10.0.0.60")).id


def _run(cli: CliRunner, *args: str, stdin: str | None = None) -> Any:
    return cli.invoke(app, list(args), input=stdin)


def _power(cli: CliRunner, node_id: int, action: str) -> Any:
    result = _run(cli, "node", "power", str(node_id), action, "--json", "--timeout", "10")
    return result, (
        json.loads(result.stdout) if result.exit_code in (0, 1) and result.stdout.strip() else None
    )


@pytest.fixture
def tasmota() -> Iterator[Tasmota]:
    peer = Tasmota(relays=2, password=PASSWORD)
    yield peer
    peer.stop()


@pytest.fixture
def gen1() -> Iterator[ShellyGen1]:
    peer = ShellyGen1(password=PASSWORD)
    yield peer
    peer.stop()


@pytest.fixture
def gen2() -> Iterator[ShellyGen2]:
    peer = ShellyGen2(outputs=2, password=PASSWORD)
    yield peer
    peer.stop()


def test_tasmota_relay_on_status_off_with_basic_auth(cli: CliRunner, node_id: int, tasmota: Tasmota) -> None:
    configured = _run(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--method",
        "tasmota",
        "--tasmota-host",
        "127.0.0.1",
        "--tasmota-port",
        str(tasmota.port),
        "--tasmota-relay",
        "2",
        "--tasmota-password",
        "-",
        "--json",
        stdin=PASSWORD + "\n",
    )
    assert configured.exit_code == 0, configured.output
    shown = json.loads(configured.stdout)
    assert shown["wol_method"] == "tasmota" and shown["tasmota_password_set"] is True
    assert PASSWORD not in configured.stdout

    result, on = _power(cli, node_id, "on")
    assert result.exit_code == 0, result.output
    assert on["nodes"][0]["state"] == "up" and on["nodes"][0]["verified_by"] == "query"
    assert tasmota.on == [False, True]
    assert "Power2 On" in tasmota.commands  # the real command, relay 2; the password went as Basic auth
    status = _run(cli, "node", "power", str(node_id), "status", "--json")
    assert json.loads(status.stdout)["state"] == "on"
    result, off = _power(cli, node_id, "off")
    assert result.exit_code == 0 and off["nodes"][0]["state"] == "off"
    assert tasmota.on == [False, False]


def test_tasmota_wrong_password_and_missing_relay_are_fatal(
    cli: CliRunner, node_id: int, tasmota: Tasmota
) -> None:
    _run(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--method",
        "tasmota",
        "--tasmota-host",
        "127.0.0.1",
        "--tasmota-port",
        str(tasmota.port),
        "--tasmota-password",
        "-",
        stdin="wrong\n",
    )
    result, out = _power(cli, node_id, "on")
    assert result.exit_code == 1
    assert "refused" in out["nodes"][0]["error"] and out["nodes"][0]["attempts"] == 0
    _run(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--tasmota-relay",
        "5",
        "--tasmota-password",
        "-",
        stdin=PASSWORD + "\n",
    )
    result, out = _power(cli, node_id, "on")
    assert result.exit_code == 1 and "has no relay 5" in out["nodes"][0]["error"]


def test_tasmota_cannot_cycle_and_says_so(cli: CliRunner, node_id: int, tasmota: Tasmota) -> None:
    _run(cli, "wol", "configure", str(node_id), "--method", "tasmota", "--tasmota-host", "127.0.0.1")
    refused = _run(cli, "node", "power", str(node_id), "cycle")
    assert refused.exit_code == 1 and "cannot do 'cycle'" in refused.stderr


def test_shelly_gen1_on_off_and_cycle_with_the_relays_own_timer(
    cli: CliRunner, node_id: int, gen1: ShellyGen1
) -> None:
    _run(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--method",
        "shelly",
        "--shelly-host",
        "127.0.0.1",
        "--shelly-port",
        str(gen1.port),
        "--shelly-password",
        "-",
        "--shelly-cycle-seconds",
        "1",
        stdin=PASSWORD + "\n",
    )
    result, on = _power(cli, node_id, "on")
    assert result.exit_code == 0 and on["nodes"][0]["state"] == "up", result.output
    assert gen1.on == [True] and "/relay/0?turn=on" in gen1.requests
    result, _ = _power(cli, node_id, "cycle")
    assert result.exit_code == 0, result.output
    assert "/relay/0?turn=off&timer=1" in gen1.requests
    deadline = time.monotonic() + 10
    while not gen1.on[0] and time.monotonic() < deadline:  # the relay switches itself back on
        time.sleep(0.1)
    assert gen1.on == [True]


def test_shelly_gen2_uses_rpc_with_sha256_digest(cli: CliRunner, node_id: int, gen2: ShellyGen2) -> None:
    _run(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--method",
        "shelly",
        "--shelly-host",
        "127.0.0.1",
        "--shelly-port",
        str(gen2.port),
        "--shelly-channel",
        "1",
        "--shelly-password",
        "-",
        stdin=PASSWORD + "\n",
    )
    result, on = _power(cli, node_id, "on")
    assert result.exit_code == 0 and on["nodes"][0]["state"] == "up", result.output
    assert gen2.on == [False, True]
    assert any(r.startswith("/rpc/Switch.Set?id=1&on=true") for r in gen2.requests)
    result, off = _power(cli, node_id, "off")
    assert result.exit_code == 0 and off["nodes"][0]["state"] == "off" and gen2.on == [False, False]
    # A channel the device does not have: the device's own error, not retried.
    _run(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--shelly-channel",
        "7",
        "--shelly-password",
        "-",
        stdin=PASSWORD + "\n",
    )
    result, out = _power(cli, node_id, "on")
    assert result.exit_code == 1 and "value 7 not found" in out["nodes"][0]["error"]


def test_shelly_gen2_wrong_password_is_refused(cli: CliRunner, node_id: int, gen2: ShellyGen2) -> None:
    _run(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--method",
        "shelly",
        "--shelly-host",
        "127.0.0.1",
        "--shelly-port",
        str(gen2.port),
        "--shelly-password",
        "-",
        stdin="not-it\n",
    )
    result, out = _power(cli, node_id, "on")
    assert result.exit_code == 1 and "refused the credentials" in out["nodes"][0]["error"]
    assert gen2.on == [False, False]


def test_unreachable_plug_is_retried_then_reported(cli: CliRunner, node_id: int) -> None:
    peer = Tasmota()
    port = peer.port
    peer.stop()  # nothing listens there any more
    _run(
        cli,
        "wol",
        "configure",
        str(node_id),
        "--method",
        "tasmota",
        "--tasmota-host",
        "127.0.0.1",
        "--tasmota-port",
        str(port),
    )
    result, out = _power(cli, node_id, "on")
    assert result.exit_code == 1 and "unreachable" in out["nodes"][0]["error"]
