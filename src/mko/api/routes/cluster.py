"""Cluster shutdown and recovery over the API: plan, run in the background, follow the operation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import Field

from mko.cluster.backups import Backup, list_backups
from mko.cluster.options import K8sOptions, K8sOptionsUpdate, get_options, update_options
from mko.cluster.plan import node_drain_inputs, plan_for, plan_inputs, plan_node_drain
from mko.cluster.preflight import latest_check, run_check, start_check
from mko.cluster.recovery import run_recovery, start_recovery
from mko.cluster.schemas import CheckPublic
from mko.cluster.shutdown import run_shutdown, start_shutdown
from mko.http.background import launch
from mko.http.deps import ActorDep, DbDep, SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.inventory.clusters import get_cluster
from mko.platform.errors import NotFoundError
from mko.platform.validation import InputModel

router = APIRouter(prefix="/api", tags=["cluster power"], route_class=MkoRoute)


class ShutdownBody(InputModel):
    """Options of a cluster shutdown."""

    force: bool = Field(default=False, description="skip the drains (force_shutdown)")
    dry_run: bool = Field(default=False, description="return the ordered plan without touching anything")
    ups_id: int | None = Field(
        default=None,
        description="shutting down because of this UPS: record an outage (restored when the UPS is back"
        " on mains) and end as a shutdown for it does (its power cycle, mko's own host)",
    )


class RecoverBody(InputModel):
    """Options of a recovery."""

    timeout: float | None = Field(
        default=None, gt=0, le=7200, description="seconds until every node is Ready"
    )


@router.post("/clusters/{cluster_id:int}/shutdown")
async def shutdown_cluster(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    cluster_id: int,
    body: ShutdownBody | None = None,
) -> dict[str, Any]:
    """Shut the cluster down in order (202, runs in the background); ``dry_run`` returns the plan (200)."""
    body = body or ShutdownBody()
    inputs = await db.run(lambda session: plan_inputs(session, settings, cluster_id, ups_id=body.ups_id))
    plan = await plan_for(inputs, settings, force=body.force)
    if body.dry_run:
        return {"plan": plan.as_dict()}
    prepared = await db.run(lambda session: start_shutdown(session, plan, actor))
    launch(request.app, run_shutdown(request.app.state.session_factory, settings, prepared))
    url = f"/api/operations/{prepared.operation_id}"
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = url
    return {
        "operation_id": prepared.operation_id,
        "operation_url": url,
        "plan": plan.as_dict(),
        "outage_id": prepared.outage_id,
    }


@router.post("/nodes/{node_id:int}/drain")
async def drain_node(
    request: Request, response: Response, db: DbDep, settings: SettingsDep, actor: ActorDep, node_id: int
) -> dict[str, Any]:
    """Drain one node for maintenance (202): a PodDisruptionBudget is never bypassed."""
    inputs, node = await db.run(lambda session: node_drain_inputs(session, settings, node_id))
    plan = await plan_node_drain(inputs, node, settings)
    prepared = await db.run(lambda session: start_shutdown(session, plan, actor))
    launch(request.app, run_shutdown(request.app.state.session_factory, settings, prepared))
    url = f"/api/operations/{prepared.operation_id}"
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = url
    return {"operation_id": prepared.operation_id, "operation_url": url, "plan": plan.as_dict()}


@router.post("/clusters/{cluster_id:int}/recover")
async def recover_cluster(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    cluster_id: int,
    body: RecoverBody | None = None,
) -> dict[str, Any]:
    """Start MicroK8s on every node, wait until all are Ready, uncordon what mko drained (202)."""
    timeout = (body.timeout if body else None) or settings.recovery_timeout
    prepared = await db.run(lambda session: start_recovery(session, cluster_id, actor, timeout))
    launch(request.app, run_recovery(request.app.state.session_factory, settings, prepared))
    url = f"/api/operations/{prepared.operation_id}"
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = url
    return {"operation_id": prepared.operation_id, "operation_url": url}


@router.get("/clusters/{cluster_id:int}/settings", tags=["clusters"])
def get_cluster_settings(session: SessionDep, cluster_id: int) -> K8sOptions:
    """The cluster's Kubernetes-aware shutdown settings (backup, drains, quiesce), defaults filled in."""
    return get_options(session, cluster_id)


@router.patch("/clusters/{cluster_id:int}/settings", tags=["clusters"])
def change_cluster_settings(
    session: SessionDep,
    cluster_id: int,
    body: K8sOptionsUpdate,
) -> K8sOptions:
    """Change the settings sent (null: back to the default); the others stay as they are."""
    return update_options(session, cluster_id, body.model_dump(exclude_unset=True))


@router.get("/clusters/{cluster_id:int}/backups", tags=["clusters"])
def cluster_backups(session: SessionDep, settings: SettingsDep, cluster_id: int) -> list[Backup]:
    """Datastore backups taken before this cluster's shutdowns, newest first, kept on mko's host."""
    get_cluster(session, cluster_id)
    return list_backups(settings, cluster_id)


@router.post("/clusters/{cluster_id:int}/check", status_code=status.HTTP_202_ACCEPTED)
async def check_cluster(
    request: Request, response: Response, db: DbDep, settings: SettingsDep, actor: ActorDep, cluster_id: int
) -> dict[str, Any]:
    """Preflight every node (202, runs in the background): SSH, sudo, graceful node shutdown, WoL, and
    the BMC's power restore policy; follow the operation, or read ``GET …/check`` once it ended."""
    prepared = await db.run(lambda session: start_check(session, cluster_id, actor))
    launch(request.app, run_check(request.app.state.session_factory, settings, prepared))
    url = f"/api/operations/{prepared.operation_id}"
    response.headers["Location"] = url
    return {"operation_id": prepared.operation_id, "operation_url": url}


@router.get("/clusters/{cluster_id:int}/check")
def last_cluster_check(session: SessionDep, cluster_id: int) -> CheckPublic:
    """The cluster's latest finished preflight: per node, each check's verdict and reason (404: none yet)."""
    operation = latest_check(session, cluster_id)
    if operation is None:
        raise NotFoundError("preflight check of cluster", cluster_id)
    return CheckPublic(
        operation_id=operation.id,
        status=operation.status.value,
        summary=operation.summary,
        actor=operation.actor,
        finished_at=operation.finished_at,
        counts=operation.result.get("counts", {}),
        nodes=operation.result.get("nodes", []),
    )
