"""The web UI's pages and form handlers; every action goes through the same services as the API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session

from mko.access.principal import allows
from mko.agents.registry import list_agents
from mko.api.background import launch, launch_wake
from mko.api.deps import DbDep, SessionDep, SettingsDep
from mko.api.routing import MkoRoute
from mko.cluster import outages
from mko.cluster.plan import plan_for, plan_inputs
from mko.cluster.recovery import run_recovery, start_recovery
from mko.cluster.shutdown import run_shutdown, start_shutdown
from mko.inventory.clusters import create_cluster, get_cluster, list_clusters, node_counts
from mko.inventory.nodes import configure_wol, create_node, get_node, list_nodes
from mko.inventory.power_settings import BUILT_METHODS
from mko.inventory.schemas import ClusterCreate, NodeCreate, WolConfigure
from mko.operations.kinds import WAKE_KIND_PREFIX
from mko.operations.records import (
    Actor,
    finish_operation,
    get_operation,
    last_step_for_node,
    list_for_node,
    list_operations,
    start_operation,
)
from mko.platform.db.models.access import Role
from mko.platform.db.models.inventory import NodeRole, WolMethod
from mko.platform.db.models.rules import ClusterAction
from mko.platform.db.models.ups import PowerEvent
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.rules.actions import ACTIONS
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule, list_rules
from mko.schedules.schemas import ScheduleCreate
from mko.schedules.service import (
    create_schedule,
    delete_schedule,
    list_schedules,
    pause_schedule,
    public,
    resume_schedule,
)
from mko.ups import service as ups_service
from mko.web.auth import WebForbidden
from mko.web.forms import FieldErrors, FormDep, blank_to_none, field_errors
from mko.wol.status import wol_status_sync
from mko.wol.wake import make_schedule, start_wake

__all__ = ["STATIC_DIR", "router"]

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False, route_class=MkoRoute)

NODE_FORM_FIELDS = ["hostname", "ip_address", "cluster_id", "role", "ssh_user", "ssh_port", "wol_mac_address"]
WOL_FORM_FIELDS = [
    "wol_mac_address",
    "wol_method",
    "wol_port",
    "wol_broadcast_address",
    "proxmox_vm_id",
    "proxmox_host_id",
    "wol_interface",
    "wol_prefix_len",
    "probe_port",
    "site",
]


def _actor(request: Request) -> Actor:
    principal = getattr(request.state, "principal", None)
    name = f"web:{principal.name}" if principal is not None else "web"
    return Actor(name=name, source=request.client.host if request.client else "")


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("settings", request.app.state.settings)
    # Form pages re-render with what was typed and the errors next to each field.
    context.setdefault("form", {})
    context.setdefault("errors", {})
    principal = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("can_operate", principal is not None and allows(principal.role, Role.OPERATOR))
    context.setdefault("roles", [r.value for r in NodeRole])
    context.setdefault("methods", [m.value for m in WolMethod if m in BUILT_METHODS])
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ------------------------------------------------------------------ dashboard


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, session: SessionDep) -> HTMLResponse:
    """Clusters with node counts, running and recent operations."""
    return _render(
        request,
        "dashboard.html",
        clusters=list_clusters(session),
        counts=node_counts(session),
        operations=list_operations(session, limit=10),
        upses=_ups_statuses(request, session),
        agents=list_agents(session, request.app.state.settings),
    )


# ------------------------------------------------------------------ nodes


def _nodes_page(
    request: Request, session: SessionDep, cluster_id: int | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    nodes = list_nodes(session, cluster_id)
    clusters = list_clusters(session)
    last_wake = {node.id: last_step_for_node(session, node.id, WAKE_KIND_PREFIX) for node in nodes}
    return _render(
        request,
        "nodes.html",
        status_code,
        nodes=nodes,
        clusters=clusters,
        cluster_options=[("", "—")] + [(c.id, c.name) for c in clusters],
        cluster_id=cluster_id,
        last_wake=last_wake,
        **context,
    )


@router.get("/nodes", response_class=HTMLResponse)
def nodes_page(request: Request, session: SessionDep, cluster_id: int | None = None) -> HTMLResponse:
    """All nodes with reachability, filterable by cluster; wake one or several."""
    return _nodes_page(request, session, cluster_id)


@router.post("/nodes", response_class=HTMLResponse)
def add_node(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Add a node from the form; errors are shown next to their field and nothing is stored."""
    values = blank_to_none(form, NODE_FORM_FIELDS)
    try:
        data = NodeCreate.model_validate({k: v for k, v in values.items() if v is not None})
        node = create_node(session, data)
    except (InputError, ValidationError) as exc:
        return _nodes_page(request, session, None, 422, form=values, errors=field_errors(exc))
    except ConflictError as exc:
        return _nodes_page(request, session, None, 409, form=values, errors={"form": str(exc)})
    return _see_other(f"/nodes/{node.id}")


async def _start_wake(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    page: Callable[[Session, str], HTMLResponse],
    *,
    wait: bool = False,
    **target: Any,
) -> Response:
    """Start a wake from a form and go to its operation page, or show ``page`` again with the reason
    it cannot start (the database work in worker threads, like every async handler's)."""
    actor = _actor(request)
    try:
        schedule = make_schedule(settings, wait=wait)
        prepared = await db.run(lambda session: start_wake(session, schedule=schedule, actor=actor, **target))
    except (InputError, ConflictError) as exc:
        error = str(exc)
        return await db.run(lambda session: page(session, error))
    if not prepared.coalesced:
        launch_wake(request.app, settings, prepared)
    return _see_other(f"/operations/{prepared.operation_id}")


@router.post("/nodes/wake")
async def wake_selected(request: Request, db: DbDep, settings: SettingsDep, form: FormDep) -> Response:
    """Wake the nodes ticked in the table, in one operation."""
    node_ids = [int(value) for value in form.getlist("node_id") if isinstance(value, str) and value.isdigit()]
    return await _start_wake(
        request,
        db,
        settings,
        lambda session, error: _nodes_page(request, session, None, 409, errors={"wake": error}),
        target_type="nodes",
        target_id=None,
        node_ids=node_ids,
    )


def _node_page(
    request: Request, session: SessionDep, node_id: int, status_code: int = 200, **context: Any
) -> HTMLResponse:
    node = get_node(session, node_id)
    context.setdefault("form", None)
    return _render(
        request,
        "node_detail.html",
        status_code,
        node=node,
        wol=wol_status_sync(session, node_id),
        history=list_for_node(session, node_id),
        **context,
    )


@router.get("/nodes/{node_id:int}", response_class=HTMLResponse)
def node_page(request: Request, session: SessionDep, node_id: int, saved: bool = False) -> HTMLResponse:
    """One node: its Wake-on-LAN section (status, configure, send) and its operation history."""
    return _node_page(request, session, node_id, saved=saved)


@router.post("/nodes/{node_id:int}/wol/configure", response_class=HTMLResponse)
def configure_node(request: Request, session: SessionDep, node_id: int, form: FormDep) -> Response:
    """Save the WoL form: it shows every field, so every field is set (an emptied field is cleared)."""
    values = blank_to_none(form, WOL_FORM_FIELDS)
    values["wol_enabled"] = form.get("wol_enabled") == "on"
    values["is_virtual_node"] = form.get("kind") == "virtual"
    if values["wol_method"] is None:
        values["wol_method"] = (
            WolMethod.PROXMOX.value if values["is_virtual_node"] else WolMethod.ETHERNET.value
        )
    if values["wol_port"] is None:
        values["wol_port"] = 9
    secureon = str(form.get("wol_secureon") or "").strip()
    if secureon:  # write-only: an empty field keeps the stored password
        values["wol_secureon"] = secureon
    if form.get("clear_secureon") == "on":
        values["wol_secureon"] = None
    try:
        data = WolConfigure.model_validate(values)
        principal = getattr(request.state, "principal", None)
        admin = principal is not None and principal.role == Role.ADMIN
        configure_wol(session, node_id, data, may_rebind_secrets=admin)
    except (InputError, ValidationError) as exc:
        return _node_page(request, session, node_id, 422, form=values, errors=field_errors(exc))
    changes = data.model_dump(mode="json", exclude_unset=True)
    if changes.get("wol_secureon"):
        changes["wol_secureon"] = "***"
    operation = start_operation(
        session,
        kind="wol_configure",
        target_type="node",
        target_id=node_id,
        actor=_actor(request),
        parameters=changes,
    )
    finish_operation(session, operation, status=operation.status.SUCCEEDED, summary="saved from the web UI")
    return _see_other(f"/nodes/{node_id}?saved=1")


@router.post("/nodes/{node_id:int}/wol/wake", response_class=HTMLResponse)
async def wake_node(
    request: Request, db: DbDep, settings: SettingsDep, node_id: int, form: FormDep
) -> Response:
    """Send wake packets to one node, optionally waiting until it is up; follow it on its operation page."""
    return await _start_wake(
        request,
        db,
        settings,
        lambda session, error: _node_page(request, session, node_id, 409, wake_error=error),
        wait=form.get("wait") == "on",
        target_type="node",
        target_id=node_id,
        coalesce_seconds=settings.wake_coalesce_seconds,
    )


# ------------------------------------------------------------------ clusters


def _clusters_page(
    request: Request, session: SessionDep, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return _render(
        request,
        "clusters.html",
        status_code,
        clusters=list_clusters(session),
        counts=node_counts(session),
        **context,
    )


@router.get("/clusters", response_class=HTMLResponse)
def clusters_page(request: Request, session: SessionDep) -> HTMLResponse:
    """All clusters."""
    return _clusters_page(request, session)


@router.post("/clusters", response_class=HTMLResponse)
def add_cluster(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Add a cluster from the form."""
    values: dict[str, str | None] = {
        "name": str(form.get("name") or "").strip(),
        "description": str(form.get("description") or ""),
        "site": str(form.get("site") or "").strip() or None,
    }
    errors: FieldErrors
    try:
        cluster = create_cluster(session, ClusterCreate.model_validate(values))
    except (InputError, ValidationError) as exc:
        errors = field_errors(exc)
        return _clusters_page(request, session, 422, form=values, errors=errors)
    except ConflictError as exc:
        return _clusters_page(request, session, 409, form=values, errors={"name": str(exc)})
    return _see_other(f"/clusters/{cluster.id}")


def _cluster_page(
    request: Request, session: SessionDep, cluster_id: int, status_code: int = 200, **context: Any
) -> HTMLResponse:
    cluster = get_cluster(session, cluster_id)
    nodes = list_nodes(session, cluster_id)
    return _render(
        request,
        "cluster_detail.html",
        status_code,
        cluster=cluster,
        nodes=nodes,
        history=list_operations(session, target_type="cluster", target_id=cluster_id, limit=20),
        **context,
    )


@router.get("/clusters/{cluster_id:int}", response_class=HTMLResponse)
def cluster_page(request: Request, session: SessionDep, cluster_id: int) -> HTMLResponse:
    """One cluster: its nodes in power order and its operations."""
    return _cluster_page(request, session, cluster_id)


@router.post("/clusters/{cluster_id:int}/wake", response_class=HTMLResponse)
async def wake_cluster(
    request: Request, db: DbDep, settings: SettingsDep, cluster_id: int, form: FormDep
) -> Response:
    """Wake the whole cluster, control-plane nodes first."""
    return await _start_wake(
        request,
        db,
        settings,
        lambda session, error: _cluster_page(request, session, cluster_id, 409, wake_error=error),
        wait=form.get("wait") == "on",
        target_type="cluster",
        target_id=cluster_id,
    )


# ------------------------------------------------------------------ operations


@router.get("/operations", response_class=HTMLResponse)
def operations_page(request: Request, session: SessionDep, kind: str | None = None) -> HTMLResponse:
    """The operation log, newest first."""
    return _render(request, "operations.html", operations=list_operations(session, limit=100, kind=kind))


@router.get("/operations/{operation_id:int}", response_class=HTMLResponse)
def operation_page(request: Request, session: SessionDep, operation_id: int) -> HTMLResponse:
    """One operation with its steps; follows a running one live."""
    return _render(request, "operation_detail.html", operation=get_operation(session, operation_id))


# ------------------------------------------------------------------ schedules


def _schedules_page(
    request: Request, session: SessionDep, status_code: int = 200, **context: Any
) -> HTMLResponse:
    settings = request.app.state.settings
    targets = [("", "—")]
    targets += [(f"cluster:{c.id}", f"cluster {c.name}") for c in list_clusters(session)]
    targets += [(f"node:{n.id}", f"node {n.hostname}") for n in list_nodes(session)]
    return _render(
        request,
        "schedules.html",
        status_code,
        schedules=[public(session, settings, s) for s in list_schedules(session)],
        targets=targets,
        actions=[("wake", "wake"), ("shutdown", "graceful shutdown (cluster)")],
        default_timezone=settings.schedule_default_timezone,
        **context,
    )


def _poke_scheduler(request: Request) -> None:
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.poke()


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Every schedule with its next run; add, pause, resume, remove."""
    return _schedules_page(request, session)


@router.post("/schedules", response_class=HTMLResponse)
def add_schedule(request: Request, session: SessionDep, settings: SettingsDep, form: FormDep) -> Response:
    """Add a schedule from the form; errors are shown next to their field and nothing is stored."""
    values = blank_to_none(form, ["name", "action", "target", "cron", "timezone", "notify_url"])
    values["wait"] = form.get("wait") == "on"
    kind, _, ident = str(values.get("target") or "").partition(":")
    try:
        data = ScheduleCreate(
            name=values["name"] or "",
            action=values["action"] or "wake",
            cron=values["cron"] or "",
            timezone=values["timezone"],
            cluster_id=int(ident) if kind == "cluster" and ident.isdigit() else None,
            node_id=int(ident) if kind == "node" and ident.isdigit() else None,
            wait=values["wait"],
            notify_urls=[values["notify_url"]] if values["notify_url"] else [],
        )
        create_schedule(session, settings, data)
    except (InputError, ValidationError) as exc:
        errors = field_errors(exc)
        for target_field in ("cluster_id", "node_id"):
            if target_field in errors:
                errors["target"] = errors.pop(target_field)
        if "notify_urls" in errors:
            errors["notify_url"] = errors.pop("notify_urls")
        return _schedules_page(request, session, 422, form=values, errors=errors)
    except ConflictError as exc:
        return _schedules_page(request, session, 409, form=values, errors={"name": str(exc)})
    _poke_scheduler(request)
    return _see_other("/schedules")


@router.post("/schedules/{schedule_id:int}/{change}", response_class=HTMLResponse)
def change_schedule(request: Request, session: SessionDep, schedule_id: int, change: str) -> Response:
    """Pause, resume or remove a schedule."""
    if change == "pause":
        pause_schedule(session, schedule_id)
    elif change == "resume":
        resume_schedule(session, schedule_id)
    elif change == "remove":
        delete_schedule(session, schedule_id)
    else:
        return _schedules_page(request, session, 404, errors={"form": f"unknown change {change!r}"})
    _poke_scheduler(request)
    return _see_other("/schedules")


# ------------------------------------------------------------------ UPS and power rules


def _ups_statuses(request: Request, session: SessionDep) -> list[dict[str, Any]]:
    """What the server's UPS monitor last read of each UPS (None where it has not read it)."""
    monitor = getattr(request.app.state, "ups_monitor", None)
    rows = []
    for ups in ups_service.list_ups(session):
        snapshot = monitor.snapshot(ups.id) if monitor is not None else None
        rows.append({"ups": ups, "status": snapshot})
    return rows


@router.get("/ups", response_class=HTMLResponse)
def ups_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Every UPS with its live status, and the event history."""
    return _render(
        request,
        "ups.html",
        upses=_ups_statuses(request, session),
        events=ups_service.list_events(session, limit=50),
        outages=[outages.outage_doc(session, o) for o in outages.list_outages(session, limit=20)],
    )


def _rules_page(
    request: Request, session: SessionDep, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return _render(
        request,
        "rules.html",
        status_code,
        rules=list_rules(session),
        upses=ups_service.list_ups(session),
        clusters=list_clusters(session),
        events=[e.value for e in PowerEvent],
        actions=[a.value for a in ClusterAction],
        available_actions={a.value for a in ACTIONS},
        **context,
    )


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Power rules with their counters, and the form to add one."""
    return _rules_page(request, session)


@router.post("/rules", response_class=HTMLResponse)
def add_rule(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Add a rule from the form, with the same checks as `ups create-rule`."""
    values = blank_to_none(
        form,
        ["name", "ups_id", "cluster_id", "power_event", "cluster_action", "battery_threshold", "action_delay",
         "priority", "min_charge", "stable_for"],
    )  # fmt: skip
    values["enabled"] = form.get("enabled") == "on"
    values["recover_after_wake"] = form.get("recover_after_wake") == "on"
    try:
        data = RuleCreate.model_validate({k: v for k, v in values.items() if v is not None})
        create_rule(session, data)
    except (InputError, ValidationError) as exc:
        return _rules_page(request, session, 422, form=values, errors=field_errors(exc))
    except (ConflictError, NotFoundError) as exc:
        return _rules_page(request, session, 409, form=values, errors={"form": str(exc)})
    return _see_other("/rules")


# ------------------------------------------------------------------ cluster shutdown and recovery


@router.get("/clusters/{cluster_id:int}/shutdown", response_class=HTMLResponse)
async def shutdown_confirm(
    request: Request, db: DbDep, settings: SettingsDep, cluster_id: int, force: bool = False
) -> HTMLResponse:
    """The ordered plan, to confirm before anything is touched (operators: planning probes the nodes)."""
    principal = request.state.principal
    if not allows(principal.role, Role.OPERATOR):
        raise WebForbidden(f"your role {principal.role.value} cannot shut clusters down")
    inputs = await db.run(lambda session: plan_inputs(session, settings, cluster_id))
    plan = await plan_for(inputs, settings, force=force)
    return _render(request, "shutdown_confirm.html", cluster=inputs.cluster, plan=plan, force=force)


@router.post("/clusters/{cluster_id:int}/shutdown")
async def shutdown_cluster(
    request: Request, db: DbDep, settings: SettingsDep, cluster_id: int, form: FormDep
) -> Response:
    """Shut the cluster down in order (confirmed on the plan page); follow it on its operation page."""
    actor = _actor(request)
    inputs = await db.run(lambda session: plan_inputs(session, settings, cluster_id))
    plan = await plan_for(inputs, settings, force=form.get("force") == "on")
    prepared = await db.run(lambda session: start_shutdown(session, plan, actor))
    launch(request.app, run_shutdown(request.app.state.session_factory, settings, prepared))
    return _see_other(f"/operations/{prepared.operation_id}")


@router.post("/clusters/{cluster_id:int}/recover")
async def recover_cluster(request: Request, db: DbDep, settings: SettingsDep, cluster_id: int) -> Response:
    """Start MicroK8s everywhere, wait until every node is Ready, uncordon what mko drained."""
    actor = _actor(request)
    prepared = await db.run(
        lambda session: start_recovery(session, cluster_id, actor, settings.recovery_timeout)
    )
    launch(request.app, run_recovery(request.app.state.session_factory, settings, prepared))
    return _see_other(f"/operations/{prepared.operation_id}")
