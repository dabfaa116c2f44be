"""`mko cluster-status`: the serve instances sharing the database and the leader (mko.ha)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from mko.cli.common import console, open_session
from mko.ha.election import cluster_status
from mko.platform.settings import get_settings


def cluster_status_command(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the database, every `mko serve` instance (online or offline) and which one is the leader."""
    with open_session() as session:
        status = cluster_status(session, get_settings())
    if as_json:
        typer.echo(json.dumps(status, indent=2, default=str))
        return
    leader = status["leader"] or "none"
    console.print(
        f"database: {status['database']}   leader: [bold]{leader}[/bold]   "
        f"online: {status['online']}/{len(status['instances'])}"
    )
    table = Table()
    for column in ("name", "url", "state", "leader since", "heartbeat", "started"):
        table.add_column(column)
    for item in status["instances"]:
        state = "leader" if item["leader"] else ("online" if item["online"] else "offline")
        table.add_row(
            item["name"],
            item["url"] or "-",
            state,
            item["leader_since"].isoformat(timespec="seconds") if item["leader_since"] else "-",
            f"{item['heartbeat_age']:g}s ago",
            item["started_at"].isoformat(timespec="seconds"),
        )
    console.print(table)
