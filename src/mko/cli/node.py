"""`mko node …`: nodes, their power (`mko node power <id> on|off|soft|status`, whichever driver a
node has) and their SSH host keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

import typer

from mko.cli.common import (
    EXIT_POWER_FAILURE,
    JsonOpt,
    console,
    emit,
    open_session,
    open_sessions,
    print_rows,
)
from mko.cli.lazy import NODE_COMMANDS, LazyGroup
from mko.inventory.read import SEARCH_MAX, NodeFilters, NodeState
from mko.platform.db.models.inventory import NodeRole
from mko.platform.paging import MAX_LIMIT, MAX_OFFSET, Page
from mko.platform.settings import get_settings

# Services are imported inside the commands that use them: `mko node list` loads no SSH, power or
# cryptography code (tests/unit/cli/test_cli_start_imports.py); `node add|update` live in
# mko.cli.node_edit, loaded only when they run.


class NodeGroup(LazyGroup):
    """``mko node``: ``add`` and ``update`` are imported when they run."""

    lazy = NODE_COMMANDS


node_app = typer.Typer(cls=NodeGroup, help="Nodes: add, list, show, update, remove.", no_args_is_help=True)


NODE_COLUMNS = (
    "id",
    "hostname",
    "ip_address",
    "cluster_id",
    "role",
    "wol_method",
    "wol_mac_address",
    "wol_enabled",
)


@node_app.command("list")
def node_list(
    cluster_id: Annotated[int | None, typer.Option("--cluster-id", "-c", help="only this cluster")] = None,
    role: Annotated[NodeRole | None, typer.Option(help="only control-plane or worker nodes")] = None,
    state: Annotated[
        NodeState | None, typer.Option(help="only nodes the background probes last saw up, down or unknown")
    ] = None,
    search: Annotated[
        str | None, typer.Option(help="part of the host name (any case) or IP address", max=SEARCH_MAX)
    ] = None,
    limit: Annotated[int, typer.Option(help="nodes per page", min=1, max=MAX_LIMIT)] = 1000,
    offset: Annotated[int, typer.Option(help="nodes to skip", min=0, max=MAX_OFFSET)] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List nodes (1,000 a page; --offset for the next page), optionally filtered."""
    filters = NodeFilters(cluster_id=cluster_id, role=role, state=state, search=search or None)
    page = Page(limit=limit, offset=offset)
    with open_session() as session:
        if as_json:
            from mko.inventory.read import page_of_nodes
            from mko.inventory.schemas import NodePublic

            nodes, _total = page_of_nodes(session, filters, page)
            emit([NodePublic.of(n) for n in nodes], NODE_COLUMNS, as_json=True)
            return
        from mko.inventory.read import node_table

        rows, total = node_table(session, filters, page, NODE_COLUMNS)
    print_rows(rows, header=NODE_COLUMNS)
    if total > len(rows) or offset:
        typer.echo(page.shown(len(rows), total), err=True)


@node_app.command("show")
def node_show(node_id: int, as_json: JsonOpt = False) -> None:
    """Show every field of a node."""
    from mko.inventory.nodes import get_node
    from mko.inventory.schemas import NodePublic

    with open_session() as session:
        emit(NodePublic.of(get_node(session, node_id)), NODE_COLUMNS, as_json=as_json)


@node_app.command("remove")
def node_remove(node_id: int) -> None:
    """Remove a node (its operation history stays)."""
    from mko.inventory.nodes import delete_node

    with open_session() as session:
        delete_node(session, node_id)
    console.print(f"node {node_id} removed")


POWER_CHOICES = ("on", "off", "soft", "cycle", "status")


def node_power_command(
    node_id: Annotated[int, typer.Argument(help="node id")],
    action: Annotated[
        str, typer.Argument(help="on | off (hard) | soft (ACPI/graceful) | cycle (off then on) | status")
    ],
    wait: Annotated[
        bool | None,
        typer.Option("--wait/--no-wait", help="verify the state was reached [default: when the driver can]"),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="seconds to wait for the state [default: 120]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Power a node on, off, soft-off or cycle, or show its power state, with whichever driver it has."""
    if action not in POWER_CHOICES:
        raise typer.BadParameter(f"{action!r} is not one of {', '.join(POWER_CHOICES)}", param_hint="ACTION")
    from rich.table import Table

    from mko.operations.records import Actor
    from mko.platform.db.models.operations import OperationStatus
    from mko.platform.db.session import make_engine, make_session_factory
    from mko.wol.node_power import power_status, run_power, start_power

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


def node_host_key(node_id: int, as_json: JsonOpt = False) -> None:
    """Show the SSH host key a node presents and whether mko trusts it (no login)."""
    from mko.inventory.trust import node_target
    from mko.ssh.host_keys import scan_host_key

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
    from mko.inventory.trust import node_target, trust_node
    from mko.operations.records import Actor
    from mko.ssh.host_keys import scan_host_key

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


node_app.command("trust")(node_trust)
node_app.command("host-key")(node_host_key)
node_app.command("power")(node_power_command)
