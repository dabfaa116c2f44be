"""Shelly (Gen1 and Gen2) and Tasmota drivers against fakes speaking the devices' real HTTP API, driven
through the CLI like a person would: configure, power on/off/cycle, status, and the failures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from support.plugs import ShellyGen1, ShellyGen2, Tasmota, configure, device, power, power_state, serving

PASSWORD = "plug-secret-7f3a"


@pytest.fixture
def node_id(session: Session) -> int:
    return create_node(session, NodeCreate(hostname="plugged", ip_address="10.0.0.60")).id


@pytest.fixture
def tasmota() -> Iterator[Tasmota]:
    yield from serving(Tasmota(relays=2, password=PASSWORD))


@pytest.fixture
def gen1() -> Iterator[ShellyGen1]:
    yield from serving(ShellyGen1(password=PASSWORD))


@pytest.fixture
def gen2() -> Iterator[ShellyGen2]:
    yield from serving(ShellyGen2(outputs=2, password=PASSWORD))


def test_tasmota_relay_on_status_off_with_basic_auth(cli: CliRunner, node_id: int, tasmota: Tasmota) -> None:
    configured = configure(
        cli,
        node_id,
        *device("tasmota", tasmota.port),
        "--tasmota-relay",
        "2",
        "--tasmota-password",
        "-",
        "--json",
        secret=PASSWORD,
    )
    assert configured.exit_code == 0, configured.output
    shown = json.loads(configured.stdout)
    assert shown["wol_method"] == "tasmota" and shown["tasmota_password_set"] is True
    assert PASSWORD not in configured.stdout

    result, on = power(cli, node_id, "on")
    assert result.exit_code == 0, result.output
    assert on["nodes"][0]["state"] == "up" and on["nodes"][0]["verified_by"] == "query"
    assert tasmota.on == [False, True]
    assert "Power2 On" in tasmota.commands  # the real command, relay 2; the password went as Basic auth
    assert power_state(cli, node_id) == "on"
    result, off = power(cli, node_id, "off")
    assert result.exit_code == 0 and off["nodes"][0]["state"] == "off"
    assert tasmota.on == [False, False]


def test_tasmota_wrong_password_and_missing_relay_are_fatal(
    cli: CliRunner, node_id: int, tasmota: Tasmota
) -> None:
    configure(cli, node_id, *device("tasmota", tasmota.port), "--tasmota-password", "-", secret="wrong")
    result, out = power(cli, node_id, "on")
    assert result.exit_code == 1
    assert "refused" in out["nodes"][0]["error"] and out["nodes"][0]["attempts"] == 0
    configure(cli, node_id, "--tasmota-relay", "5", "--tasmota-password", "-", secret=PASSWORD)
    result, out = power(cli, node_id, "on")
    assert result.exit_code == 1 and "has no relay 5" in out["nodes"][0]["error"]


def test_tasmota_cannot_cycle_and_says_so(cli: CliRunner, node_id: int, tasmota: Tasmota) -> None:
    configure(cli, node_id, *device("tasmota", tasmota.port))
    refused = cli.invoke(app, ["node", "power", str(node_id), "cycle"])
    assert refused.exit_code == 1 and "cannot do 'cycle'" in refused.stderr


def test_shelly_gen1_on_off_and_cycle_with_the_relays_own_timer(
    cli: CliRunner, node_id: int, gen1: ShellyGen1
) -> None:
    configure(
        cli,
        node_id,
        *device("shelly", gen1.port),
        "--shelly-password",
        "-",
        "--shelly-cycle-seconds",
        "1",
        secret=PASSWORD,
    )
    result, on = power(cli, node_id, "on")
    assert result.exit_code == 0 and on["nodes"][0]["state"] == "up", result.output
    assert gen1.on == [True] and "/relay/0?turn=on" in gen1.requests
    result, _ = power(cli, node_id, "cycle")
    assert result.exit_code == 0, result.output
    assert "/relay/0?turn=off&timer=1" in gen1.requests
    deadline = time.monotonic() + 10
    while not gen1.on[0] and time.monotonic() < deadline:  # the relay switches itself back on
        time.sleep(0.1)
    assert gen1.on == [True]


def test_shelly_gen2_uses_rpc_with_sha256_digest(cli: CliRunner, node_id: int, gen2: ShellyGen2) -> None:
    configure(
        cli,
        node_id,
        *device("shelly", gen2.port),
        "--shelly-channel",
        "1",
        "--shelly-password",
        "-",
        secret=PASSWORD,
    )
    result, on = power(cli, node_id, "on")
    assert result.exit_code == 0 and on["nodes"][0]["state"] == "up", result.output
    assert gen2.on == [False, True]
    assert any(r.startswith("/rpc/Switch.Set?id=1&on=true") for r in gen2.requests)
    result, off = power(cli, node_id, "off")
    assert result.exit_code == 0 and off["nodes"][0]["state"] == "off" and gen2.on == [False, False]
    # A channel the device does not have: the device's own error, not retried.
    configure(cli, node_id, "--shelly-channel", "7", "--shelly-password", "-", secret=PASSWORD)
    result, out = power(cli, node_id, "on")
    assert result.exit_code == 1 and "value 7 not found" in out["nodes"][0]["error"]


def test_shelly_gen2_wrong_password_is_refused(cli: CliRunner, node_id: int, gen2: ShellyGen2) -> None:
    configure(cli, node_id, *device("shelly", gen2.port), "--shelly-password", "-", secret="not-it")
    result, out = power(cli, node_id, "on")
    assert result.exit_code == 1 and "refused the credentials" in out["nodes"][0]["error"]
    assert gen2.on == [False, False]


def test_unreachable_plug_is_retried_then_reported(cli: CliRunner, node_id: int) -> None:
    peer = Tasmota()
    port = peer.port
    peer.stop()  # nothing listens there any more
    configure(cli, node_id, *device("tasmota", port))
    result, out = power(cli, node_id, "on")
    assert result.exit_code == 1 and "unreachable" in out["nodes"][0]["error"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--tasmota-relay", "33", "33 is not a Tasmota relay number (1-32)"),
        ("--shelly-channel", "16", "16 is not a Shelly channel (0-15)"),
        ("--shelly-cycle-seconds", "0", "0 is out of range (1-3600 seconds)"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_field_and_the_range(
    cli: CliRunner, node_id: int, option: str, value: str, message: str
) -> None:
    method = option.split("-")[2]
    refused = configure(cli, node_id, *device(method, 80), option, value)
    assert refused.exit_code == 2 and message in refused.stderr, refused.stderr
    assert option.removeprefix("--").replace("-", "_") in refused.stderr
