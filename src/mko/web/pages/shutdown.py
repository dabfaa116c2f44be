"""A cluster's shutdown (the plan first, then confirm) and recovery, for operators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mko.access.principal import allows
from mko.cluster.plan import node_drain_inputs, plan_for, plan_inputs, plan_node_drain
from mko.cluster.recovery import run_recovery, start_recovery
from mko.cluster.shutdown import run_shutdown, start_shutdown
from mko.http.background import launch
from mko.http.deps import DbDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.platform.db.models.access import Role
from mko.platform.errors import PermissionDeniedError
from mko.web.forms import FormDep
from mko.web.pages.render import _actor, _render, _see_other

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


@router.get("/clusters/{cluster_id:int}/shutdown", response_class=HTMLResponse)
async def shutdown_confirm(
    request: Request, db: DbDep, settings: SettingsDep, cluster_id: int, force: bool = False
) -> HTMLResponse:
    """The ordered plan, to confirm before anything is touched (operators: planning probes the nodes)."""
    principal = request.state.principal
    if not allows(principal.role, Role.OPERATOR):
        raise PermissionDeniedError(f"your role {principal.role.value} cannot shut clusters down")
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


@router.post("/nodes/{node_id:int}/drain")
async def drain_node(request: Request, db: DbDep, settings: SettingsDep, node_id: int) -> Response:
    """One node's maintenance drain; follow it on its operation page."""
    actor = _actor(request)
    inputs, node = await db.run(lambda session: node_drain_inputs(session, settings, node_id))
    plan = await plan_node_drain(inputs, node, settings)
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
