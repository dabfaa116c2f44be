"""`mko operations …`: what happened, who asked, which process ran it, step by step."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mko.cli.common import console, open_session
from mko.operations import ownership
from mko.operations.records import get_operation, list_operations
from mko.operations.schemas import OperationPublic

operations_app = typer.Typer(
    help="Operations: every power action with its actor, owner process, steps and result.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


def _report_orphans(closed: list[ownership.Orphan]) -> None:
    """One stderr line per operation just closed because its process was gone."""
    for orphan in closed:
        typer.echo(f"closed operation {orphan.operation_id} ({orphan.kind}): {orphan.summary}", err=True)


def _owner(operation: OperationPublic) -> str:
    if operation.owner_pid is None:
        return "—"
    return f"pid {operation.owner_pid} on {operation.owner_host}"


@operations_app.command("list")
def list_(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="how many, newest first")] = 50,
    kind: Annotated[str | None, typer.Option("--kind", help="e.g. cluster_shutdown")] = None,
    target_type: Annotated[str | None, typer.Option("--target-type", help="node, cluster, …")] = None,
    target_id: Annotated[int | None, typer.Option("--target-id", help="id of the node or cluster")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="e.g. cli:root, rule:3")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Newest operations first; open ones whose process is gone are closed as interrupted first."""
    with open_session() as session:
        _report_orphans(ownership.close_orphaned(session))
        found = [
            OperationPublic.model_validate(op)
            for op in list_operations(
                session, limit=limit, kind=kind, target_type=target_type, target_id=target_id, actor=actor
            )
        ]
    if as_json:
        typer.echo(json.dumps([op.model_dump(mode="json") for op in found], indent=2))
        return
    table = Table(title="operations")
    for column in ("id", "kind", "target", "status", "actor", "run by", "started", "summary"):
        table.add_column(column, overflow="fold")
    for op in found:
        started = op.started_at.strftime("%Y-%m-%d %H:%M:%S") if op.started_at else "—"
        target = f"{op.target_type} {op.target_id}" if op.target_id is not None else op.target_type
        # Text(): names and summaries are shown as written, never read as Rich markup.
        cells = (str(op.id), op.kind, target, op.status.value, op.actor, _owner(op), started, op.summary)
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)


@operations_app.command("show")
def show(operation_id: int, as_json: JsonOpt = False) -> None:
    """One operation with its steps (run it again to follow a running one)."""
    with open_session() as session:
        _report_orphans(ownership.close_orphaned(session))
        operation = OperationPublic.model_validate(get_operation(session, operation_id))
    if as_json:
        typer.echo(json.dumps(operation.model_dump(mode="json"), indent=2))
        return
    instance = f" (instance {operation.instance})" if operation.instance else ""
    heading = Table(show_header=False, box=None)
    for label, value in (
        ("operation", f"{operation.id}: {operation.kind}"),
        ("status", operation.status.value),
        ("asked by", f"{operation.actor} {operation.source}".strip()),
        ("run by", _owner(operation) + instance),
        ("summary", operation.summary),
    ):
        heading.add_row(Text(label, style="bold"), Text(value))
    console.print(heading)
    if not operation.steps:
        return
    steps = Table()
    for column in ("#", "step", "status", "message"):
        steps.add_column(column, overflow="fold")
    for step in operation.steps:
        steps.add_row(*(Text(cell) for cell in (str(step.seq), step.name, step.status.value, step.message)))
    console.print(steps)
