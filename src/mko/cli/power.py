"""`mko node power <id> on|off|soft|status` — power a node with whichever driver it has."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

import typer
from rich.table import Table

from mko.cli.app import EXIT_POWER_FAILURE, console, open_session
from mko.operations.records import Actor
from mko.platform.db.models.operations import OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import get_settings
from mko.wol.node_power import power_status, run_power, start_power

POWER_CHOICES = ("on", "off", "soft", "status")


def node_power_command(
    node_id: Annotated[int, typer.Argument(help="node id")],
    action: Annotated[str, typer.Argument(help="on | off (hard) | soft (ACPI/graceful) | status")],
    wait: Annotated[
        bool | None,
        typer.Option("--wait/--no-wait", help="verify the state was reached [default: when the driver can]"),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="seconds to wait for the state [default: 120]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Power a node on, off or soft-off, or show its power state (Proxmox, IPMI, Redfish, WoL)."""
    if action not in POWER_CHOICES:
        raise typer.BadParameter(f"{action!r} is not one of {', '.join(POWER_CHOICES)}", param_hint="ACTION")
    settings = get_settings()
    if action == "status":
        with open_session() as session:
            result = asyncio.run(power_status(session, settings, node_id))
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            console.print(f"{result['hostname']}: {result['state']} (from {result['source']})")
        return
    with open_session() as session:
        prepared = start_power(
            session, settings, node_id, action, actor=Actor.cli(), wait=wait, timeout=timeout
        )
    engine = make_engine(settings.database_url)
    try:
        spinner = console.status(
            f"power {action} {prepared.node.hostname} (operation {prepared.operation_id})…"
        )
        with contextlib.nullcontext() if as_json else spinner:
            operation = asyncio.run(run_power(make_session_factory(engine), settings, prepared))
    finally:
        engine.dispose()
    if as_json:
        payload = {
            "operation_id": operation.id,
            "status": operation.status.value,
            "summary": operation.summary,
            **operation.result,
        }
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        table = Table(title=f"operation {operation.id}: {operation.status.value}")
        for column in ("node", "hostname", "method", "state", "error"):
            table.add_column(column)
        for node in operation.result.get("nodes", []):
            table.add_row(
                str(node["node_id"]), node["hostname"], node["method"], node["state"], node["error"] or ""
            )
        console.print(table)
        console.print(operation.summary)
    if operation.status != OperationStatus.SUCCEEDED:
        raise typer.Exit(EXIT_POWER_FAILURE)
