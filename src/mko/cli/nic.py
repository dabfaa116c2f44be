"""`mko wol collect-mac`, `mko node trust|host-key` and `mko ansible …`: the node-side commands."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from mko.cli.app import EXIT_POWER_FAILURE, console, open_session, open_sessions
from mko.inventory.trust import node_target, trust_node
from mko.nic.ansible import import_facts, write_inventory
from mko.nic.collect import collect_macs, describe_row
from mko.operations.records import Actor
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.settings import get_settings
from mko.ssh.host_keys import scan_host_key

__all__ = ["ansible_app", "collect_mac", "node_host_key", "node_trust"]

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]

ansible_app = typer.Typer(
    help="Ansible: write the inventory the seed's playbooks use, import the facts they collect.",
    no_args_is_help=True,
)


def _node_ids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--node-ids: {text!r} is not a comma-separated list of ids") from None
    if not ids:
        raise typer.BadParameter("--node-ids: give at least one id, e.g. 1,2,3")
    return ids


def _print_collect(operation: Operation) -> None:
    table = Table(title=f"operation {operation.id}: {operation.status.value}")
    for column in ("node", "hostname", "state", "interface", "mac", "prefix", "detail"):
        table.add_column(column)
    for row in operation.result.get("nodes", []):
        detail = row["error"] or row["reason"] or ""
        prefix = "—" if row["prefix_len"] is None else f"/{row['prefix_len']}"
        table.add_row(
            str(row["node_id"]),
            row["hostname"],
            row["state"],
            row["interface"] or "—",
            row["mac"] or "—",
            prefix,
            detail,
        )
    console.print(table)
    console.print(operation.summary)


def collect_mac(
    node_ids: Annotated[
        str | None, typer.Option("--node-ids", help="comma-separated node ids, e.g. 1,2,3 [default: all]")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a stored MAC that differs from the node's")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Collect MAC addresses from nodes over SSH (ip -j link/addr/route), all at once."""
    ids = _node_ids(node_ids)
    settings = get_settings()
    with (
        open_sessions() as sessions,
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=as_json,
        ) as progress,
    ):
        task = progress.add_task("reading interfaces over SSH", total=len(ids) if ids else None)

        def hook(row: dict[str, Any]) -> None:
            progress.advance(task)
            if not as_json:
                progress.console.print(f"  {row['hostname']}: {describe_row(row)}")

        operation = asyncio.run(
            collect_macs(sessions, settings, ids, overwrite=overwrite, actor=Actor.cli(), on_result=hook)
        )
    if as_json:
        typer.echo(
            json.dumps(
                {"operation_id": operation.id, "status": operation.status.value, "summary": operation.summary}
                | operation.result,
                indent=2,
                default=str,
            )
        )
    else:
        _print_collect(operation)
    if operation.status != OperationStatus.SUCCEEDED:
        raise typer.Exit(EXIT_POWER_FAILURE)


def node_host_key(node_id: int, as_json: JsonOpt = False) -> None:
    """Show the SSH host key a node presents and whether mko trusts it (no login)."""
    settings = get_settings()
    with open_session() as session:
        target = node_target(session, settings, node_id)
    info = asyncio.run(scan_host_key(target, settings)).as_dict()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    console.print(f"{info['hostname']} at {info['address']} presents {info['fingerprint']}: {info['status']}")
    for recorded in info["recorded"]:
        console.print(f"  recorded: {recorded}")


def node_trust(
    node_id: int,
    fingerprint: Annotated[
        str | None,
        typer.Option("--fingerprint", help="SHA256:… read on the node's console; must match, no prompt"),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="trust the presented key without asking")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="replace a different key recorded earlier")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Record a node's SSH host key in mko's known_hosts, after showing its fingerprint."""
    settings = get_settings()
    with open_sessions() as sessions:
        expected = fingerprint
        if expected is None:
            with sessions() as session:
                target = node_target(session, settings, node_id)
            info = asyncio.run(scan_host_key(target, settings)).as_dict()
            if not as_json:
                console.print(
                    f"{info['hostname']} at {info['address']} presents [bold]{info['fingerprint']}[/bold]"
                    f" ({info['status']})"
                )
                for recorded in info["recorded"]:
                    console.print(f"  recorded so far: {recorded}")
            if info["status"] != "trusted" and not yes:
                typer.confirm("Compare it with `ssh-keygen -lf` on the node. Trust this key?", abort=True)
            expected = info["fingerprint"]
        result = asyncio.run(
            trust_node(sessions, settings, node_id, actor=Actor.cli(), expected=expected, replace=replace)
        )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        console.print(
            f"{result['hostname']}: {result['fingerprint']} {result['action']} in {result['known_hosts']}"
        )


@ansible_app.command("inventory")
def inventory_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="[default: ansible/inventory/dynamic_inventory.ini]")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the Ansible inventory from the database (groups per cluster and role; kept current after)."""
    settings = get_settings()
    with open_session() as session:
        summary = write_inventory(session, settings, output)
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2))
        return
    console.print(f"wrote {summary.path}: {summary.hosts} host(s)")
    for group, hosts in summary.groups.items():
        console.print(f"  [{group}] {', '.join(hosts) or '—'}")


@ansible_app.command("import-facts")
def import_facts_command(
    paths: Annotated[
        list[Path], typer.Argument(help="facts files or directories (e.g. ansible/facts), or - for stdin")
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a stored MAC that differs from the node's")
    ] = False,
    database_id: Annotated[
        str | None, typer.Option("--database-id", help="refuse unless this is the inventory's database")
    ] = None,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="also write the facts read from stdin to this file")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import what collect_network_info.yml / configure_wake_on_lan.yml collected into the database."""
    settings = get_settings()
    data = None
    files = [p for p in paths if str(p) != "-"]
    if len(files) != len(paths):
        try:
            data = json.loads(sys.stdin.read())
        except ValueError as exc:
            raise typer.BadParameter(f"standard input is not JSON: {exc}") from None
    with open_session() as session:
        operation = import_facts(
            session,
            settings,
            files,
            data=data,
            keep=keep,
            overwrite=overwrite,
            actor=Actor.cli(),
            expect_database=database_id,
        )
    if as_json:
        payload = {"operation_id": operation.id, "status": operation.status.value} | operation.result
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        for step in operation.steps:
            console.print(f"  {step.name}: {step.status.value}: {step.message}")
        console.print(f"operation {operation.id}: {operation.summary}")
    if operation.status != OperationStatus.SUCCEEDED:
        raise typer.Exit(EXIT_POWER_FAILURE)
