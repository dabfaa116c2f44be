"""Cluster pages: the list, a cluster, adding one, waking it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from mko.cluster.backups import list_backups
from mko.cluster.options import K8sOptions, get_options, update_options
from mko.cluster.preflight import CHECKS, latest_check, run_check, start_check
from mko.http.background import launch
from mko.http.deps import DbDep, SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.inventory.clusters import create_cluster, get_cluster, list_clusters, node_counts, update_cluster
from mko.inventory.nodes import list_nodes
from mko.inventory.schemas import ClusterCreate, ClusterUpdate
from mko.operations.records import list_operations
from mko.platform.errors import ConflictError, InputError
from mko.web.forms import FieldErrors, FormDep, field_errors
from mko.web.pages.render import _actor, _render, _see_other, _start_wake
from mko.wol.wake import make_schedule, plan_cluster_wake

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


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
    # The wake's dependency levels, as `mko wol wake-cluster --dry-run` prints them (nothing is sent).
    plan = plan_cluster_wake(session, cluster_id, make_schedule(request.app.state.settings))
    return _render(
        request,
        "cluster_detail.html",
        status_code,
        cluster=cluster,
        nodes=nodes,
        wake_plan=plan,
        history=list_operations(
            session, target_type="cluster", target_id=cluster_id, limit=20, details=False
        ),
        k8s=context.pop("k8s", None) or get_options(session, cluster_id),
        check=latest_check(session, cluster_id),
        checks=CHECKS,
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


def _split(value: Any) -> list[str]:
    return [item.strip() for item in str(value or "").split(",") if item.strip()]


@router.post("/clusters/{cluster_id:int}/settings", response_class=HTMLResponse)
def change_settings(request: Request, session: SessionDep, cluster_id: int, form: FormDep) -> Response:
    """Change the cluster's Kubernetes-aware shutdown settings from its page's form."""
    checks = ("backup", "backup_required", "eviction_fallback", "quiesce", "preflight_required")
    changes: dict[str, Any] = {name: form.get(name) == "on" for name in checks}
    for name in ("backup_keep", "backup_timeout", "drain_grace", "detach_timeout"):
        changes[name] = str(form.get(name) or "").strip() or None
    changes["quiesce_storage_classes"] = _split(form.get("quiesce_storage_classes"))
    changes["quiesce_labels"] = _split(form.get("quiesce_labels"))
    try:
        update_options(session, cluster_id, changes)
    except InputError as exc:
        session.rollback()
        shown = K8sOptions.model_construct(**(get_options(session, cluster_id).model_dump() | changes))
        return _cluster_page(request, session, cluster_id, 422, k8s=shown, settings_errors=field_errors(exc))
    return _see_other(f"/clusters/{cluster_id}#settings")


@router.post("/clusters/{cluster_id:int}/stagger", response_class=HTMLResponse)
def change_stagger(request: Request, session: SessionDep, cluster_id: int, form: FormDep) -> Response:
    """Set the seconds between two nodes' power-ons in a wake of the cluster (blank: none)."""
    text = str(form.get("power_stagger") or "").strip()
    try:
        update_cluster(session, cluster_id, ClusterUpdate(power_stagger=text or None))
    except (InputError, ValidationError) as exc:
        session.rollback()
        errors = field_errors(exc)
        return _cluster_page(request, session, cluster_id, 422, stagger_form=text, stagger_errors=errors)
    return _see_other(f"/clusters/{cluster_id}#power-order")


@router.post("/clusters/{cluster_id:int}/check")
async def check_cluster(request: Request, db: DbDep, settings: SettingsDep, cluster_id: int) -> Response:
    """Preflight every node of the cluster; follow it on its operation page."""
    actor = _actor(request)
    prepared = await db.run(lambda session: start_check(session, cluster_id, actor))
    launch(request.app, run_check(request.app.state.session_factory, settings, prepared))
    return _see_other(f"/operations/{prepared.operation_id}")


@router.get("/clusters/{cluster_id:int}/backups", response_class=HTMLResponse)
def backups_page(
    request: Request, session: SessionDep, settings: SettingsDep, cluster_id: int
) -> HTMLResponse:
    """The datastore backups taken before the cluster's shutdowns, newest first."""
    cluster = get_cluster(session, cluster_id)
    return _render(
        request, "cluster_backups.html", cluster=cluster, backups=list_backups(settings, cluster_id)
    )
