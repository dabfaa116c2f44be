"""Clusters and nodes through the real Typer app."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from mko.cli.root import app
from mko.platform.settings import Settings


def _ok(cli: CliRunner, *args: str) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout


def test_help_lists_groups(cli: CliRunner, settings: Settings) -> None:
    out = _ok(cli, "--help")
    for group in ("cluster", "node", "db", "serve"):
        assert group in out


def test_add_is_terse_update_counts_nodes_and_wide_tables_are_whole(
    cli: CliRunner, settings: Settings
) -> None:
    _ok(cli, "cluster", "add", "home")
    added = _ok(
        cli,
        "node",
        "add",
        "cp1",
        "192.168.100.111",
        "--cluster-id",
        "1",
        "--mac",
        "AA-BB-CC-DD-EE-01",
        "--role",
        "control-plane",
    )
    assert "aa:bb:cc:dd:ee:01" in added and "mko node show 1" in added
    assert "bmc_address" not in added and "redfish_url" not in added  # only what a person just typed
    updated = json.loads(_ok(cli, "cluster", "update", "1", "--site", "branch", "--json"))
    assert updated["node_count"] == 1 and updated["site"] == "branch"
    # Off a terminal no table is cut at 80 columns: every id, address and MAC is whole on its row.
    row = next(line for line in _ok(cli, "node", "list").splitlines() if "cp1" in line)
    assert "192.168.100.111" in row and "aa:bb:cc:dd:ee:01" in row and "control-plane" in row


def test_node_add_then_list_json(cli: CliRunner, settings: Settings) -> None:
    _ok(cli, "cluster", "add", "home", "--description", "rack")
    _ok(
        cli,
        "node",
        "add",
        "cp1",
        "10.0.0.11",
        "--cluster-id",
        "1",
        "--role",
        "control-plane",
        "--mac",
        "AABBCCDDEE01",
    )
    nodes = json.loads(_ok(cli, "node", "list", "--json"))
    assert [(n["hostname"], n["wol_mac_address"], n["role"]) for n in nodes] == [
        ("cp1", "aa:bb:cc:dd:ee:01", "control-plane")
    ]
    shown = json.loads(_ok(cli, "node", "show", "1", "--json"))
    assert shown["cluster_id"] == 1
    _ok(cli, "node", "update", "1", "--ip", "10.0.0.21")
    assert json.loads(_ok(cli, "node", "show", "1", "--json"))["ip_address"] == "10.0.0.21"
    cluster = json.loads(_ok(cli, "cluster", "show", "1", "--json"))
    assert cluster["node_count"] == 1
    assert "cp1" in _ok(cli, "node", "list")
    _ok(cli, "node", "remove", "1")
    _ok(cli, "cluster", "remove", "1")
    assert json.loads(_ok(cli, "cluster", "list", "--json")) == []


def test_bad_input_exits_2_with_one_line_and_stores_nothing(cli: CliRunner, settings: Settings) -> None:
    cases = [
        (["node", "add", "n1", "10.0.0.300"], "ip_address"),
        (["node", "add", "n1", "10.0.0.1", "--mac", "zz:bb:cc:dd:ee:ff"], "wol_mac_address"),
        (["node", "add", "n1", "10.0.0.1", "--ssh-port", "70000"], "ssh_port"),
        (["node", "add", "n1", "10.0.0.1", "--ssh-port", "abc"], "--ssh-port"),
        (["node", "add", "n1;reboot", "10.0.0.1"], "hostname"),
        (["node", "add", "n1", "10.0.0.1", "--cluster-id", "7"], "cluster_id"),
        (["node", "show", "5"], "node 5 not found"),
        (["cluster", "remove", "5"], "cluster 5 not found"),
    ]
    for args, needle in cases:
        result = cli.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, result.stderr)
    assert json.loads(_ok(cli, "node", "list", "--json")) == []


def test_duplicate_cluster_exits_2(cli: CliRunner, settings: Settings) -> None:
    _ok(cli, "cluster", "add", "home")
    result = cli.invoke(app, ["cluster", "add", "home"])
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_db_upgrade(cli: CliRunner, settings: Settings) -> None:
    assert "upgraded from empty" in _ok(cli, "db", "upgrade")
    assert "already at revision" in _ok(cli, "db", "upgrade")


def test_every_refusal_of_the_seed_commands_names_the_command_that_fixes_it(
    cli: CliRunner, settings: Settings
) -> None:
    """On an empty inventory, each seed command says what is missing and the command that adds it;
    every command an error names exists (its --help answers)."""
    named: set[tuple[str, ...]] = set()

    def refused(args: list[str], needle: str) -> None:
        result = cli.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        [line] = result.stderr.strip().splitlines()
        assert needle in line, (args, line)
        named.update(tuple(command.split()[1:3]) for command in re.findall(r"`(mko [^`]+)`", line))

    refused(
        ["wol", "wake-node", "1"], "node 1 not found; add one with `mko node add HOSTNAME IP --cluster-id ID`"
    )
    refused(["wol", "wake-cluster", "1"], "cluster 1 not found; add one with `mko cluster add NAME`")
    refused(["wol", "status", "1"], "(ids: `mko node list`)")
    refused(["wol", "enable", "1"], "`mko node add")
    refused(["wol", "collect-mac"], "no nodes to collect MAC addresses from: add one with `mko node add")
    refused(["wol", "configure", "1", "--enable"], "`mko node add")
    refused(["ups", "status", "1"], "UPS 1 not found; add one with `mko ups add NAME UPSNAME@NUT-HOST`")
    rule = ["--ups-id", "1", "--cluster-id", "1", "--power-event", "power_restored"]
    rule += ["--cluster-action", "wake_on_lan", "--name", "Wake cluster after power restoration"]
    refused(["ups", "create-rule", *rule], "ups_id: UPS 1 does not exist: add one with `mko ups add")
    refused(["cluster", "recover", "1"], "(ids: `mko cluster list`)")
    refused(["operations", "show", "3"], "operation 3 not found; ids: `mko operations list`")

    _ok(cli, "cluster", "add", "c1")
    _ok(cli, "node", "add", "n1", "10.0.0.1", "--cluster-id", "1")
    _ok(cli, "cluster", "add", "c2")
    refused(["wol", "wake-node", "1"], "`mko wol configure 1 --enable`")
    refused(["cluster", "remove", "1"], "`mko node list --cluster-id 1`, then `mko node remove ID`")
    virtual = ["--virtual", "--proxmox-vm-id", "101", "--proxmox-host-id", "1"]
    refused(
        ["wol", "configure", "1", *virtual], "Proxmox host 1 does not exist: add one with `mko proxmox add"
    )
    refused(
        ["cluster", "recover", "2"],
        "cluster 2 has no nodes: add one with `mko node add HOSTNAME IP --cluster-id 2`",
    )
    refused(["cluster", "drain", "1", "--yes"], "(`mko node update ID --role control-plane`)")
    assert len(named) >= 8
    for command in sorted(named):
        assert cli.invoke(app, [*command, "--help"]).exit_code == 0, command
