"""The SNMP PDU driver against a real SNMP agent (snmpsim) serving APC, Eaton and Raritan outlet tables,
over v2c and v3, driven through the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.platform.settings import Settings, get_settings
from support.plugs import configure, device, power, power_state, serving
from support.snmp import SnmpSim


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpSim]:
    yield from serving(SnmpSim(tmp_path_factory.mktemp("snmpsim")))


@pytest.fixture
def quick(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Short SNMP timeouts and retry spacing, so the failure cases end quickly."""
    monkeypatch.setenv("MKO_POWER_API_TIMEOUT", "1")
    monkeypatch.setenv("MKO_WOL_DEFAULT_DELAY", "0.2")
    get_settings.cache_clear()
    return get_settings()


def _node(session: Session, name: str) -> int:
    return create_node(session, NodeCreate(hostname=name, ip_address="10.0.0.70")).id


def _outlet(cli: CliRunner, node_id: int, agent: SnmpSim, profile: str, outlet: int, *extra: str,
            community: str | None = None) -> Any:  # fmt: skip
    secret = ["--snmp-community", "-"] if community is not None else []
    result = configure(
        cli,
        node_id,
        *device("snmp_pdu", agent.port, prefix="snmp"),
        "--snmp-profile",
        profile,
        "--snmp-outlet",
        str(outlet),
        *secret,
        *extra,
        "--json",
        secret=community,
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("profile", "community", "outlet"),
    [("apc", "apc", 3), ("apc_rpdu2", "apc", 4), ("eaton", "eaton", 2), ("raritan", "raritan", 5)],
)
def test_outlet_off_on_and_status_per_vendor_mib_over_v2c(
    cli: CliRunner,
    session: Session,
    quick: Settings,
    agent: SnmpSim,
    profile: str,
    community: str,
    outlet: int,
) -> None:
    node_id = _node(session, f"pdu-{profile.replace('_', '-')}")
    shown = _outlet(cli, node_id, agent, profile, outlet, community=community)
    assert shown["snmp_community_set"] is True and "snmp_community" not in shown  # write-only
    assert power_state(cli, node_id) == "on"  # every outlet starts on
    result, off = power(cli, node_id, "off", timeout=15)
    assert result.exit_code == 0, result.output
    assert off["nodes"][0]["state"] == "off" and off["nodes"][0]["verified_by"] == "query"
    assert power_state(cli, node_id) == "off"
    result, on = power(cli, node_id, "on", timeout=15)
    assert result.exit_code == 0 and on["nodes"][0]["state"] == "up", result.output
    assert power_state(cli, node_id) == "on"


def test_cycle_reboots_the_outlet_and_reads_on_again(
    cli: CliRunner, session: Session, quick: Settings, agent: SnmpSim
) -> None:
    node_id = _node(session, "pdu-cycle")
    _outlet(cli, node_id, agent, "apc", 6, community="apc")
    result, cycled = power(cli, node_id, "cycle", timeout=15)
    assert result.exit_code == 0 and cycled["nodes"][0]["state"] == "up", result.output
    # One reboot command, then re-reads until on (a second reboot would cut the node again).
    assert cycled["nodes"][0]["attempts"] == 1, cycled
    assert power_state(cli, node_id) == "on"


def test_v3_with_sha_and_aes(cli: CliRunner, session: Session, quick: Settings, agent: SnmpSim) -> None:
    node_id = _node(session, "pdu-v3")
    shown = _outlet(
        cli,
        node_id,
        agent,
        "raritan",
        7,
        "--snmp-version",
        "3",
        "--snmp-user",
        agent.USER,
        "--snmp-context",
        "raritan",
        "--snmp-auth-key",
        agent.AUTH_KEY,
        "--snmp-priv-key",
        agent.PRIV_KEY,
    )
    assert shown["snmp_auth_key_set"] and shown["snmp_priv_key_set"]
    assert agent.AUTH_KEY not in json.dumps(shown) and agent.PRIV_KEY not in json.dumps(shown)
    result, off = power(cli, node_id, "off", timeout=15)
    assert result.exit_code == 0 and off["nodes"][0]["state"] == "off", result.output
    # A wrong v3 key is fatal at once (no retry can fix it).
    configure(
        cli,
        node_id,
        "--snmp-auth-key",
        "wrong-key-1",
        "--snmp-priv-key",
        agent.PRIV_KEY,
    )
    result, failed = power(cli, node_id, "on", timeout=15)
    assert result.exit_code == 1 and failed["nodes"][0]["attempts"] == 0
    assert "SNMPv3" in failed["nodes"][0]["error"]


def test_missing_outlet_is_fatal_and_a_wrong_community_is_no_answer(
    cli: CliRunner, session: Session, quick: Settings, agent: SnmpSim
) -> None:
    node_id = _node(session, "pdu-bad")
    _outlet(cli, node_id, agent, "apc", 99, community="apc")
    result, failed = power(cli, node_id, "on", timeout=15)
    assert result.exit_code == 1 and "no such outlet" in failed["nodes"][0]["error"]
    _outlet(cli, node_id, agent, "apc", 1, community="not-a-community")
    result, failed = power(cli, node_id, "on", timeout=15)
    assert result.exit_code == 1 and "no answer" in failed["nodes"][0]["error"]
    assert "not-a-community" not in result.stdout


def test_bad_settings_are_refused_naming_the_field(cli: CliRunner, session: Session, quick: Settings) -> None:
    node_id = _node(session, "pdu-input")
    for option, value, field in (
        ("--snmp-profile", "cyberpower", "snmp_profile"),
        ("--snmp-outlet", "0", "snmp_outlet"),
        ("--snmp-version", "1", "snmp_version"),
        ("--snmp-auth-key", "short", "snmp_auth_key"),
    ):
        result = configure(
            cli,
            node_id,
            "--method",
            "snmp_pdu",
            "--snmp-host",
            "pdu.lan",
            "--snmp-outlet",
            "1",
            option,
            value,
        )
        assert result.exit_code == 2 and field in result.stderr, (option, result.stderr)
