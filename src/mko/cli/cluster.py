"""`mko cluster …`: clusters, and their shutdown and recovery with live progress."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.orm import Session, sessionmaker

from mko.cli.common import EXIT_POWER_FAILURE, JsonOpt, SiteOpt, console, emit, open_session, print_rows
from mko.cli.node import NODE_COLUMNS
from mko.cli.progress import TimeLeftColumn
from mko.cluster.backups import backup_dir, list_backups
from mko.cluster.options import K8sOptions, get_options, update_options
from mko.cluster.plan import ShutdownPlan, node_drain_inputs, plan_node_drain, plan_shutdown
from mko.cluster.preflight import run_check, start_check
from mko.cluster.recovery import run_recovery, start_recovery
from mko.cluster.shutdown import PreparedShutdown, run_shutdown, start_shutdown
from mko.cluster.steps import StepHook
from mko.inventory.clusters import (
    create_cluster,
    delete_cluster,
    get_cluster,
    list_clusters,
    node_counts,
    update_cluster,
)
from mko.inventory.nodes import list_nodes
from mko.inventory.schemas import ClusterCreate, ClusterPublic, ClusterUpdate, NodePublic
from mko.operations.records import Actor
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings, get_settings

__all__ = ["cluster_app"]


cluster_app = typer.Typer(help="Clusters: add, list, show, remove.", no_args_is_help=True)


CLUSTER_COLUMNS = ("id", "name", "node_count", "site", "description")


@cluster_app.command("add")
def cluster_add(
    name: str,
    description: Annotated[str, typer.Option(help="free text")] = "",
    site: SiteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a cluster."""
    with open_session() as session:
        data = ClusterCreate(name=name, description=description, site=site)
        cluster = create_cluster(session, data)
        emit(ClusterPublic.model_validate(cluster), CLUSTER_COLUMNS, as_json=as_json)


@cluster_app.command("list")
def cluster_list(as_json: JsonOpt = False) -> None:
    """List clusters with their node counts."""
    with open_session() as session:
        counts = node_counts(session)
        rows = [
            ClusterPublic.model_validate(c).model_copy(update={"node_count": counts.get(c.id, 0)})
            for c in list_clusters(session)
        ]
        emit(rows, CLUSTER_COLUMNS, as_json=as_json, title="Clusters")


@cluster_app.command("show")
def cluster_show(cluster_id: int, as_json: JsonOpt = False) -> None:
    """Show one cluster and its nodes."""
    with open_session() as session:
        cluster = get_cluster(session, cluster_id)
        nodes = [NodePublic.of(n) for n in list_nodes(session, cluster_id)]
        public = ClusterPublic.model_validate(cluster).model_copy(update={"node_count": len(nodes)})
        emit(public, CLUSTER_COLUMNS, as_json=as_json)
        if not as_json and nodes:
            emit(nodes, NODE_COLUMNS, as_json=False, title="Nodes")


@cluster_app.command("update")
def cluster_update(
    cluster_id: int,
    name: Annotated[str | None, typer.Option(help="new name")] = None,
    description: Annotated[str | None, typer.Option(help="new description")] = None,
    site: SiteOpt = None,
    stagger: Annotated[
        float | None,
        typer.Option("--stagger", help="seconds between two nodes' power-ons in its wakes (0: none)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a cluster or change its description, site or power-on stagger."""
    given = {"name": name, "description": description, "site": site, "power_stagger": stagger}
    changes = {k: v for k, v in given.items() if v is not None}
    with open_session() as session:
        cluster = update_cluster(session, cluster_id, ClusterUpdate(**changes))
        count = node_counts(session).get(cluster.id, 0)
        public = ClusterPublic.model_validate(cluster).model_copy(update={"node_count": count})
        emit(public, CLUSTER_COLUMNS, as_json=as_json)


@cluster_app.command("settings")
def cluster_settings(
    cluster_id: int,
    backup: Annotated[
        bool | None, typer.Option("--backup/--no-backup", help="back up the datastore before a shutdown")
    ] = None,
    backup_keep: Annotated[int | None, typer.Option(help="backups kept on mko's host")] = None,
    backup_timeout: Annotated[
        float | None, typer.Option(help="seconds `microk8s dbctl backup` may take")
    ] = None,
    backup_required: Annotated[
        bool | None,
        typer.Option("--backup-required/--backup-optional", help="a failed backup stops the shutdown"),
    ] = None,
    drain_grace: Annotated[
        float | None, typer.Option(help="seconds a drain waits on evictions (kubectl drain --timeout)")
    ] = None,
    eviction_fallback: Annotated[
        bool | None,
        typer.Option(
            "--eviction-fallback/--no-eviction-fallback",
            help="a whole-cluster power-off deletes pods a PodDisruptionBudget protects after the grace",
        ),
    ] = None,
    quiesce: Annotated[
        bool | None,
        typer.Option("--quiesce/--no-quiesce", help="scale workloads with PersistentVolumes to zero first"),
    ] = None,
    storage_class: Annotated[
        list[str] | None,
        typer.Option("--storage-class", help="only workloads using this StorageClass (repeat; '' clears)"),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="only workloads with this label, key=value or key (repeat; '' clears)"),
    ] = None,
    detach_timeout: Annotated[
        float | None, typer.Option(help="seconds to wait for Longhorn volumes to detach")
    ] = None,
    preflight_required: Annotated[
        bool | None,
        typer.Option(
            "--preflight-required/--preflight-optional",
            help="a scheduled shutdown refuses to start when a preflight check fails (never one for power)",
        ),
    ] = None,
    reset: Annotated[
        list[str] | None, typer.Option("--reset", help="put this setting back to its default (repeat)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or change the cluster's Kubernetes-aware shutdown settings (see docs/shutdown.md)."""
    given: dict[str, Any] = {
        "backup": backup,
        "backup_keep": backup_keep,
        "backup_timeout": backup_timeout,
        "backup_required": backup_required,
        "drain_grace": drain_grace,
        "eviction_fallback": eviction_fallback,
        "quiesce": quiesce,
        "quiesce_storage_classes": [v for v in storage_class if v] if storage_class is not None else None,
        "quiesce_labels": [v for v in label if v] if label is not None else None,
        "detach_timeout": detach_timeout,
        "preflight_required": preflight_required,
    }
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    changes |= dict.fromkeys(reset or [])
    with open_session() as session:
        options = (
            update_options(session, cluster_id, changes) if changes else get_options(session, cluster_id)
        )
        emit(options, list(K8sOptions.model_fields), as_json=as_json)


@cluster_app.command("backups")
def cluster_backups(cluster_id: int, as_json: JsonOpt = False) -> None:
    """List the datastore backups taken before the cluster's shutdowns, newest first."""
    settings = get_settings()
    with open_session() as session:
        get_cluster(session, cluster_id)
    found = list_backups(settings, cluster_id)
    if not found and not as_json:
        console.print(f"no backups of cluster {cluster_id} in {backup_dir(settings, cluster_id)}")
        return
    emit(
        found,
        ("name", "taken_at", "node", "keys", "size", "operation_id", "path"),
        as_json=as_json,
        title=f"Datastore backups of cluster {cluster_id}",
    )


@cluster_app.command("check")
def cluster_check(
    cluster_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Preflight every node: SSH, sudo, graceful node shutdown, Wake-on-LAN, the BMC's restore policy.

    Each check ends pass, warn, fail or n/a with the fix; exit 1 when a check fails (docs/shutdown.md).
    """
    settings = get_settings()
    with open_session() as session:
        prepared = start_check(session, cluster_id, Actor.cli())
    operation = _run_followed(
        settings,
        f"checking {len(prepared.targets)} node(s)",
        lambda factory, hook: run_check(factory, settings, prepared, hook),
        as_json,
    )
    if not as_json:
        rows = [
            (node["hostname"], check, result["verdict"], result["reason"])
            for node in operation.result.get("nodes", [])
            for check, result in node["checks"].items()
        ]
        print_rows(rows, header=("node", "check", "verdict", "reason"))
    _report(operation, as_json, ok=(OperationStatus.SUCCEEDED, OperationStatus.PARTIAL))


@cluster_app.command("remove")
def cluster_remove(cluster_id: int) -> None:
    """Remove an empty cluster."""
    with open_session() as session:
        delete_cluster(session, cluster_id)
    console.print(f"cluster {cluster_id} removed")


def _follow(
    title: str, run: Callable[[StepHook], Operation], quiet: bool, timeout: float | None = None
) -> Operation:
    """Run ``run(hook)`` under a spinner with the time taken (and left); each step is printed as it ends,
    and a running phase's news (who is still awaited) replaces the spinner's text on a terminal."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TimeLeftColumn(timeout),
        console=console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task(title)

        def hook(node: str, text: str, status: OperationStatus) -> None:
            if quiet:
                return
            if status == OperationStatus.RUNNING:
                progress.update(task, description=f"{title}: {text}")
                return
            marks = {
                OperationStatus.SUCCEEDED: "✓",
                OperationStatus.CANCELLED: "–",
                OperationStatus.PARTIAL: "!",
            }
            mark = marks.get(status, "✗")
            progress.console.print(f"  {mark} {node}: {text}", highlight=False, markup=False)
            progress.update(task, description=f"{title}: {node} {text.split(':', maxsplit=1)[0]}")

        return run(hook)


def _report(
    operation: Operation, as_json: bool, ok: tuple[OperationStatus, ...] = (OperationStatus.SUCCEEDED,)
) -> None:
    if as_json:
        body = {
            "operation_id": operation.id,
            "status": operation.status.value,
            "summary": operation.summary,
            **operation.result,
        }
        typer.echo(json.dumps(body, indent=2, default=str))
    else:
        console.print(
            f"operation {operation.id}: {operation.status.value} — {operation.summary}",
            highlight=False,
            markup=False,
        )
    if operation.status not in ok:
        raise typer.Exit(EXIT_POWER_FAILURE)


@cluster_app.command("shutdown")
def cluster_shutdown(
    cluster_id: int,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the ordered plan, touch nothing")] = False,
    force: Annotated[bool, typer.Option("--force", help="skip the drains (force_shutdown)")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    ups_id: Annotated[
        int | None,
        typer.Option(
            "--ups",
            help="shutting down because of this UPS: record an outage (restored when it is back on mains)"
            " and end as a shutdown for it does (its power cycle, mko's own host)",
            metavar="UPS_ID",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Shut down in order: workers drained and stopped first, control planes last, one at a time."""
    settings = get_settings()
    with open_session() as session:
        plan = asyncio.run(plan_shutdown(session, settings, cluster_id, force=force, ups_id=ups_id))
        if dry_run:
            if as_json:
                typer.echo(json.dumps(plan.as_dict(), indent=2))
            else:
                for line in plan.lines():
                    console.print(line, highlight=False, markup=False, soft_wrap=True)
                console.print("dry run: nothing was done", highlight=False)
            return
        prepared = _confirm_start(
            session, plan, f"Power off {len(plan.hostnames)} node(s) now?", yes, as_json
        )
    _run_prepared(settings, prepared, f"shutting down {len(plan.hostnames)} node(s)", as_json)


def _confirm_start(
    session: Session, plan: ShutdownPlan, question: str, yes: bool, as_json: bool
) -> PreparedShutdown:
    """Show the plan and ask (unless --yes), then record its operation."""
    if not yes:
        for line in plan.lines():
            typer.echo(line, err=as_json)
        typer.confirm(question, abort=True, err=as_json)
    return start_shutdown(session, plan, Actor.cli())


def _run_followed(
    settings: Settings,
    title: str,
    run: Callable[[sessionmaker[Session], StepHook], Coroutine[Any, Any, Operation]],
    as_json: bool,
    timeout: float | None = None,
) -> Operation:
    """Run a recorded operation's coroutine on its own engine with live progress (_follow)."""
    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        return _follow(title, lambda hook: asyncio.run(run(factory, hook)), as_json, timeout)
    finally:
        engine.dispose()


def _run_prepared(settings: Settings, prepared: PreparedShutdown, title: str, as_json: bool) -> None:
    """Run a recorded shutdown (or drain) with live progress, then report it."""
    operation = _run_followed(
        settings,
        title,
        lambda factory, hook: run_shutdown(factory, settings, prepared, on_step=hook),
        as_json,
    )
    _report(operation, as_json)


@cluster_app.command("drain")
def cluster_drain(
    node_id: Annotated[int, typer.Argument(help="the node to drain (its id)")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Drain one node for maintenance: cordon, evict its pods; a PodDisruptionBudget is never bypassed."""
    settings = get_settings()
    with open_session() as session:
        plan = asyncio.run(plan_node_drain(*node_drain_inputs(session, settings, node_id), settings))
        prepared = _confirm_start(session, plan, f"Drain {plan.hostnames[0]} now?", yes, as_json)
    _run_prepared(settings, prepared, "draining", as_json)


@cluster_app.command("recover")
def cluster_recover(
    cluster_id: int,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, max=7200, help="seconds until every node is Ready [default: 900]"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """After power returns: microk8s start everywhere, wait until all nodes are Ready, uncordon."""
    settings = get_settings()
    with open_session() as session:
        prepared = start_recovery(session, cluster_id, Actor.cli(), timeout or settings.recovery_timeout)
    operation = _run_followed(
        settings,
        f"recovering {len(prepared.nodes)} node(s)",
        lambda factory, hook: run_recovery(factory, settings, prepared, hook),
        as_json,
        prepared.timeout,
    )
    _report(operation, as_json)
