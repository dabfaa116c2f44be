"""`mko wol …` — the seed's Wake-on-LAN commands, exactly as its guide writes them."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from contextlib import nullcontext
from typing import Annotated, Any

import typer

from mko.cli.common import (
    EXIT_POWER_FAILURE,
    JsonOpt,
    console,
    emit,
    keep_long_lived_out_of_collections,
    open_session,
    open_sessions,
    print_rows,
)
from mko.cli.lazy import WOL_COMMANDS, LazyGroup
from mko.inventory.nodes import configure_wol
from mko.inventory.schemas import NodePublic, WolConfigure
from mko.operations.records import Actor, get_operation
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import get_settings
from mko.power.base import NodeOutcome
from mko.power.magic import LIMITED_BROADCAST, send_magic_packet
from mko.wol.wake import PreparedWake, make_schedule, plan_cluster_wake, run_wake, start_requested_wake


class WolGroup(LazyGroup):
    """``mko wol``: ``configure`` (an option per driver setting) is imported when it runs."""

    lazy = WOL_COMMANDS


wol_app = typer.Typer(
    cls=WolGroup,
    help="Wake-on-LAN: wake nodes and clusters, status, enable/disable, configure.",
    no_args_is_help=True,
)

RetriesOpt = Annotated[int | None, typer.Option("--retries", help="magic packets per node [default: 3]")]
DelayOpt = Annotated[float | None, typer.Option("--delay", help="seconds between packets [default: 1.0]")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="probe nodes and re-send until they answer")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="seconds to wait with --wait [default: 300]")
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="list every node, not only those that need attention")
]
NODE_COLUMNS = (
    "id",
    "hostname",
    "wol_enabled",
    "wol_method",
    "wol_mac_address",
    "wol_port",
    "wol_broadcast_address",
)


def _run_wake(
    target_type: str,
    target_id: int,
    retries: int | None,
    delay: float | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    verbose: bool = False,
    stagger: float | None = None,
    dry_run: bool = False,
) -> None:
    settings = get_settings()
    schedule = make_schedule(
        settings, retries=retries, delay=delay, wait=wait, timeout=timeout, stagger=stagger
    )
    if dry_run:
        with open_session() as session:
            plan = plan_cluster_wake(session, target_id, schedule)
        _print_plan(plan, as_json)
        return
    with open_session() as session:
        prepared = start_requested_wake(
            session,
            settings,
            target_type=target_type,
            target_id=target_id,
            schedule=schedule,
            actor=Actor.cli(),
        )
    # The snapshots and the modules live until the wake ends: its full collections skip them.
    keep_long_lived_out_of_collections(collect=False)
    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        if prepared.coalesced:  # someone else's wake of the same target is under way: follow that one
            operation = _follow_joined(factory, prepared, quiet=as_json)
        else:
            operation = _with_progress(
                prepared,
                lambda hook: asyncio.run(run_wake(factory, settings, prepared, hook)),
                quiet=as_json,
            )
    finally:
        engine.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "operation_id": operation.id,
                    "status": operation.status.value,
                    "summary": operation.summary,
                    **({"coalesced": True} if prepared.coalesced else {}),
                    **operation.result,
                },
                indent=2,
                default=str,
            )
        )
    else:
        _print_result(operation, verbose=verbose)
        if target_type == "cluster" and wait and operation.status == OperationStatus.SUCCEEDED:
            # Answering is not serving: Kubernetes readiness is the recovery's to wait for.
            typer.echo(
                f"next: `mko cluster recover {target_id}` starts MicroK8s and waits until every node is Ready"
            )
    if prepared.coalesced and not schedule.wait and operation.status == OperationStatus.RUNNING:
        return  # its packets are under way: what a wake without --wait promises
    if operation.status != OperationStatus.SUCCEEDED:
        raise typer.Exit(EXIT_POWER_FAILURE)


def _progress(*, disable: bool, timeout: float | None = None) -> Any:
    """Rich's progress display as the wol commands show it (Rich imported here, when one is shown);
    ``timeout``: the seconds left of a --wait's --timeout, counted down."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from mko.cli.progress import TimeLeftColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeLeftColumn(timeout),
        console=console,
        transient=True,
        disable=disable,
    )


def _with_progress(prepared: PreparedWake, run: Any, *, quiet: bool) -> Operation:
    """Run the wake showing each node's line as its state changes (packet sent, up, failed).

    On a terminal the lines go above a Rich progress display (packets sent, then nodes settled; with
    --wait the nodes up and the time left of --timeout); off a terminal only the lines, plain. The
    display (and Rich) start with the first packet's event, so nothing of it comes before the first
    packet; with --json there are no lines and no display.
    """
    if quiet:
        result: Operation = run(None)
        return result
    total = len(prepared.nodes)
    waiting = prepared.schedule.wait
    label = "nodes up" if waiting else "nodes sent"
    display: dict[str, Any] = {}
    settled: set[int] = set()
    sent: set[int] = set()
    packets = 0
    on_terminal = sys.stdout.isatty()  # asked once: the hook runs twice per node

    def start() -> tuple[Any, Any]:
        progress = _progress(disable=False, timeout=prepared.schedule.timeout if waiting else None)
        progress.start()
        display["progress"] = progress
        return progress, progress.add_task(f"waking {total} node(s): {label}", total=total)

    def say(line: str) -> None:
        if "progress" in display:
            display["progress"].console.print(line, highlight=False, markup=False)
        else:
            typer.echo(line)

    def hook(kind: str, outcome: NodeOutcome) -> None:
        nonlocal packets
        shown = display.get("shown")
        if shown is None and on_terminal:
            shown = display.setdefault("shown", start())
        if kind == "sent":
            packets += 1
            if shown:
                shown[0].update(
                    shown[1], description=f"waking {total} node(s), {packets} packet(s) sent: {label}"
                )
            if waiting and outcome.node_id not in sent:
                sent.add(outcome.node_id)
                say(f"  {outcome.hostname}: sent, waiting for it to answer")
        done = kind in ("up", "failed", "not_up") or (kind == "sent" and not waiting)
        if done and outcome.node_id not in settled:
            settled.add(outcome.node_id)
            if shown:
                shown[0].update(shown[1], completed=len(settled))
            if kind in ("up", "failed"):
                say(f"  {outcome.hostname}: {outcome.describe()}")

    try:
        result = run(hook)
    finally:
        if "progress" in display:
            display["progress"].stop()
    return result


def _follow_joined(factory: Any, prepared: PreparedWake, *, quiet: bool) -> Operation:
    """The wake this one joined (the server, a rule or another shell runs it; no more packets are sent).

    Without --wait that wake is the answer as it stands; with --wait it is followed under a spinner to
    its end, or for as long as this wake's own budget (its packets and --timeout) lasts.
    """
    operation_id = prepared.operation_id
    if not quiet:
        typer.echo(f"a wake of the same target is under way (operation {operation_id}): joined it")
    schedule = prepared.schedule
    budget = schedule.retries * schedule.delay + schedule.timeout if schedule.wait else 0.0
    deadline = time.monotonic() + budget
    with console.status(f"following operation {operation_id}…") if not quiet and budget else nullcontext():
        while True:
            with factory() as session:
                operation: Operation = get_operation(session, operation_id)
                finished = operation.status not in (OperationStatus.PENDING, OperationStatus.RUNNING)
                if finished or time.monotonic() >= deadline:
                    session.expunge(operation)
                    return operation
            time.sleep(0.5)


WAKE_COLUMNS = ("node", "hostname", "method", "state", "packets", "up after", "error")


def _print_result(operation: Operation, *, verbose: bool = False) -> None:
    """Counts by state, then only the nodes that need attention (every node with ``verbose``): a
    10,000-node wake answers in a few lines; --json gives every node to scripts."""
    nodes = operation.result.get("nodes", [])
    skipped = operation.result.get("skipped", [])
    good = "up" if operation.result.get("verified") else "sent"
    counts = Counter(node["state"] for node in nodes)
    if skipped:
        counts["skipped"] = len(skipped)
    tally = ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    typer.echo(
        f"operation {operation.id}: {operation.status.value}: {len(nodes) + len(skipped)} node(s): {tally}"
    )
    shown = nodes if verbose else [node for node in nodes if node["state"] != good]
    rows = [
        (
            str(node["node_id"]),
            node["hostname"],
            node["method"],
            node["state"],
            str(node["attempts"]),
            "—" if node["up_after"] is None else f"{node['up_after']:.1f}s",
            node["error"] or "",
        )
        for node in shown
    ]
    rows += [(str(s["node_id"]), "", "", "skipped", "0", "—", s["reason"]) for s in skipped]
    if rows:
        print_rows(rows, header=WAKE_COLUMNS)
    elif nodes and not verbose:
        typer.echo(f"every node {good}; --verbose lists them")


@wol_app.command("wake-node")
def wake_node(
    node_id: int,
    retries: RetriesOpt = None,
    delay: DelayOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Wake a specific node."""
    _run_wake("node", node_id, retries, delay, wait, timeout, as_json, verbose)


@wol_app.command("wake-cluster")
def wake_cluster(
    cluster_id: int,
    retries: RetriesOpt = None,
    delay: DelayOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    stagger: Annotated[
        float | None,
        typer.Option("--stagger", help="seconds between two nodes' power-ons [default: the cluster's]"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the order as levels; power nothing")
    ] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Wake all nodes in a cluster: control-plane nodes first, nodes that depend on others (depends_on)
    after them, level by level, each level's power-ons spread by --stagger; prints counts by state and
    the nodes that need attention (--verbose: every node)."""
    _run_wake("cluster", cluster_id, retries, delay, wait, timeout, as_json, verbose, stagger, dry_run)


PLAN_COLUMNS = ("level", "node", "hostname", "method", "after", "depends on")


def _print_plan(plan: dict[str, Any], as_json: bool) -> None:
    """The dry run's levels: what would be powered on, by which method, in which order."""
    if as_json:
        typer.echo(json.dumps(plan, indent=2))
        return
    typer.echo(f"wake plan of cluster {plan['cluster_id']} (stagger {plan['stagger']:g} s, nothing sent)")
    rows = [
        (
            str(level["level"]),
            str(node["node_id"]),
            node["hostname"],
            node["method"],
            f"+{node['starts_after']:g} s",
            ", ".join(map(str, node["depends_on"])) or "—",
        )
        for level in plan["levels"]
        for node in level["nodes"]
    ]
    print_rows(rows, header=PLAN_COLUMNS)
    for skipped in plan["skipped"]:
        typer.echo(f"  skipped node {skipped['node_id']}: {skipped['reason']}")


@wol_app.command("status")
def status(
    node_id: int,
    probe: Annotated[bool, typer.Option("--probe", help="check reachability now")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Get WoL status for a node."""
    from rich.table import Table

    from mko.wol.status import wol_status

    settings = get_settings()
    with open_session() as session:
        result = asyncio.run(wol_status(session, node_id, probe=probe, probe_timeout=settings.probe_timeout))
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    table = Table(show_header=False, box=None)
    for key, value in result.items():
        table.add_row(
            f"[bold]{key}[/bold]", "—" if value is None else json.dumps(value, default=str).strip('"')
        )
    console.print(table)


def configure_node(node_id: int, data: WolConfigure, as_json: bool) -> None:
    """``wol configure``'s change, recorded, and what it printed (the command: mko.cli.node_edit)."""
    with open_session() as session:
        node, operation = configure_wol(session, node_id, data, Actor.cli())
        emit(NodePublic.of(node), NODE_COLUMNS, as_json=as_json, brief=True)
    if not as_json:
        said = "nothing changed" if operation is None else f"operation {operation.id}: {operation.summary}"
        typer.echo(said)


SWITCH_COLUMNS = ("id", "hostname", "wol_enabled", "wol_mac_address", "nic_interface", "nic_wol_state")
FlagOnlyOpt = Annotated[
    bool,
    typer.Option("--flag-only", help="change only mko's flag; do not configure the node's network card"),
]


def _switch(node_id: int, enable: bool, flag_only: bool, as_json: bool) -> None:
    from mko.nic.wol_switch import set_nic_wol

    settings = get_settings()
    with open_sessions() as sessions:
        change = asyncio.run(
            set_nic_wol(sessions, settings, node_id, enable=enable, actor=Actor.cli(), flag_only=flag_only)
        )
        public = NodePublic.of(change.node)
    if as_json:
        payload = public.model_dump(mode="json") | {
            "operation_id": change.operation.id,
            "operation_status": change.operation.status.value,
            "summary": change.operation.summary,
            "nic": change.nic,
        }
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        for step in change.operation.steps:
            console.print(f"  {step.name}: {step.message}")
        shown = {k: v for k, v in public.model_dump(mode="json").items() if k in SWITCH_COLUMNS}
        console.print("  " + ", ".join(f"{k}={'—' if v is None else v}" for k, v in shown.items()))
        console.print(f"operation {change.operation.id}: {change.operation.summary}")
    if change.operation.status != OperationStatus.SUCCEEDED:
        raise typer.Exit(EXIT_POWER_FAILURE)


@wol_app.command("enable")
def enable(node_id: int, flag_only: FlagOnlyOpt = False, as_json: JsonOpt = False) -> None:
    """Enable WoL on a node: `ethtool -s IFACE wol g` over SSH, made persistent and read back, then
    mko's flag. Fails (and changes nothing) when the node cannot be reached; see --flag-only."""
    _switch(node_id, True, flag_only, as_json)


@wol_app.command("disable")
def disable(node_id: int, flag_only: FlagOnlyOpt = False, as_json: JsonOpt = False) -> None:
    """Disable WoL on a node: `ethtool -s IFACE wol d` over SSH (persistent), then mko's flag."""
    _switch(node_id, False, flag_only, as_json)


@wol_app.command("send")
def send(
    mac: str,
    broadcast: Annotated[str, typer.Option("--broadcast", help="destination address")] = LIMITED_BROADCAST,
    port: Annotated[int, typer.Option("--port", help="UDP port")] = 9,
    interface: Annotated[str | None, typer.Option("--interface", help="send from this interface")] = None,
    secureon: Annotated[str | None, typer.Option("--secureon", help="SecureOn password")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="raw Ethernet frame (EtherType 0x0842) on --interface")
    ] = False,
    count: Annotated[int, typer.Option("--count", min=1, max=100, help="packets to send")] = 1,
) -> None:
    """Send an ad-hoc magic packet to a MAC address, like `wakeonlan` / `etherwake`."""
    for _ in range(count):
        send_magic_packet(
            mac,
            address=broadcast,
            port=port,
            interface=interface,
            secureon=secureon,
            transport="ethernet" if raw else "udp",
        )
    where = (
        f"on {interface} (raw Ethernet)"
        if raw
        else f"to {broadcast}:{port}" + (f" via {interface}" if interface else "")
    )
    console.print(f"sent {count} magic packet(s) for {mac} {where}")


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
    from rich.table import Table

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
    from mko.nic.collect import collect_macs, describe_row

    ids = _node_ids(node_ids)
    settings = get_settings()
    with (
        open_sessions() as sessions,
        _progress(disable=as_json) as progress,
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


wol_app.command("collect-mac")(collect_mac)
