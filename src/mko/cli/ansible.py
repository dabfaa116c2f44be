"""`mko ansible …`: the Ansible inventory and facts imported back."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mko.cli.common import EXIT_POWER_FAILURE, JsonOpt, console, open_session
from mko.nic.ansible import import_facts, write_inventory
from mko.operations.records import Actor
from mko.platform.db.models.operations import OperationStatus
from mko.platform.settings import get_settings

__all__ = ["ansible_app"]


ansible_app = typer.Typer(
    help="Ansible: write the inventory the seed's playbooks use, import the facts they collect.",
    no_args_is_help=True,
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
