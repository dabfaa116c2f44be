"""The seed's Wake-on-LAN endpoints, exactly at the paths the guide names."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from mko.http.background import launch_wake, result_or_accepted
from mko.http.deps import ActorDep, DbDep, SessionDep, SettingsDep
from mko.http.live import LiveReads
from mko.http.routing import MkoRoute
from mko.http.security import AdminDep, PrincipalDep, require_operator_for
from mko.inventory.nodes import configure_wol, get_node
from mko.inventory.schemas import NodePublic, WolConfigure
from mko.inventory.snapshots import snapshot
from mko.nic.wol_switch import set_nic_wol
from mko.platform.db.models.operations import OperationStatus
from mko.platform.settings import Settings
from mko.platform.validation import InputModel
from mko.wol.status import probe_reachable, wol_status_sync
from mko.wol.wake import PreparedWake, make_schedule, plan_cluster_wake, start_requested_wake

router = APIRouter(prefix="/api", tags=["wake-on-lan"], route_class=MkoRoute)


class WakeBody(InputModel):
    """Optional wake options; defaults come from settings (3 packets, 1 s apart, no verification)."""

    retries: int | None = Field(default=None, ge=1, le=100, description="magic packets per node (1-100)")
    delay: float | None = Field(default=None, ge=0, le=60, description="seconds between re-sends (0-60)")
    wait: bool = Field(default=False, description="probe each node and keep re-sending until it answers")
    timeout: float | None = Field(
        default=None, gt=0, le=3600, description="seconds to wait for nodes with wait=true (at most 3600)"
    )
    stagger: float | None = Field(
        default=None,
        ge=0,
        le=600,
        description="seconds between two nodes' power-ons [default: the cluster's]",
    )


class WakeResponse(BaseModel):
    """The wake's operation; ``status`` is ``running`` when it continues in the background (HTTP 202)."""

    operation_id: int
    status: OperationStatus
    summary: str
    nodes: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    operation_url: str
    coalesced: bool = False


class NodesWakeBody(WakeBody):
    """Wake several nodes in one operation."""

    node_ids: list[int] = Field(min_length=1, description="ids of the nodes to wake")


async def _answer(
    request: Request, response: Response, settings: Settings, prepared: PreparedWake
) -> WakeResponse:
    url = f"/api/operations/{prepared.operation_id}"
    if prepared.coalesced:
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Location"] = url
        return WakeResponse(
            operation_id=prepared.operation_id,
            status=OperationStatus.RUNNING,
            summary=f"joined the wake already under way; follow {url}",
            operation_url=url,
            coalesced=True,
        )
    task = launch_wake(request.app, settings, prepared)
    # Short wakes answer with their result; long ones (wait=true) continue and answer 202 at once.
    operation = await result_or_accepted(task, settings.api_sync_wait, response, url)
    if operation is None:
        return WakeResponse(
            operation_id=prepared.operation_id,
            status=OperationStatus.RUNNING,
            summary=f"waking {len(prepared.nodes)} node(s); follow {url}",
            operation_url=url,
        )
    return WakeResponse(
        operation_id=operation.id,
        status=operation.status,
        summary=operation.summary,
        nodes=operation.result.get("nodes", []),
        skipped=operation.result.get("skipped", []),
        operation_url=url,
    )


async def _wake(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    target_type: str,
    target_id: int | None,
    body: WakeBody | None,
) -> WakeResponse:
    body = body or WakeBody()
    schedule = make_schedule(
        settings,
        retries=body.retries,
        delay=body.delay,
        wait=body.wait,
        timeout=body.timeout,
        stagger=body.stagger,
    )
    node_ids = body.node_ids if isinstance(body, NodesWakeBody) else ()
    prepared = await db.run(
        lambda session: start_requested_wake(
            session,
            settings,
            target_type=target_type,
            target_id=target_id,
            schedule=schedule,
            actor=actor,
            node_ids=node_ids,
        )
    )
    return await _answer(request, response, settings, prepared)


@router.post("/nodes/wol/wake")
async def wake_nodes(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    body: NodesWakeBody,
) -> WakeResponse:
    """Wake several nodes at once in one operation (nodes that cannot be woken are skipped and named)."""
    return await _wake(request, response, db, settings, actor, "nodes", None, body)


@router.post("/nodes/{node_id:int}/wol/wake")
async def wake_node(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    node_id: int,
    body: WakeBody | None = None,
) -> WakeResponse:
    """Send magic packets to one node (409 when its WoL is disabled or it has no MAC)."""
    return await _wake(request, response, db, settings, actor, "node", node_id, body)


@router.post("/clusters/{cluster_id:int}/wol/wake")
async def wake_cluster(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    cluster_id: int,
    body: WakeBody | None = None,
) -> WakeResponse:
    """Wake every node of a cluster: control planes first, then level by level as nodes depend on
    each other (depends_on), each level's power-ons ``stagger`` seconds apart."""
    return await _wake(request, response, db, settings, actor, "cluster", cluster_id, body)


@router.get("/clusters/{cluster_id:int}/wol/plan")
async def wake_plan(
    db: DbDep,
    settings: SettingsDep,
    cluster_id: int,
    stagger: float | None = Query(default=None, ge=0, le=600, description="seconds between power-ons"),
) -> dict[str, Any]:
    """The order a wake of the cluster would follow, as dependency levels; nothing is powered."""
    schedule = make_schedule(settings, stagger=stagger)
    return await db.run(lambda session: plan_cluster_wake(session, cluster_id, schedule))


@router.get("/nodes/{node_id:int}/wol/status")
async def wol_status(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    node_id: int,
    probe: bool = Query(
        default=False,
        description="also check reachability now (operator; at most once per live_read_interval per node)",
    ),
) -> dict[str, Any]:
    """Configuration, the last wake and its outcome; ``?probe=true`` also checks reachability now."""

    status = await db.lookup(lambda session: wol_status_sync(session, node_id))
    if probe:
        await require_operator_for(request, principal, "probing a node now")
        target = await db.run(lambda session: snapshot(get_node(session, node_id)))
        live: LiveReads[dict[str, Any]] = request.app.state.live_reads
        reading = await live.read(("probe", node_id), lambda: probe_reachable(target, settings.probe_timeout))
        status["reachable"] = reading.result() | reading.stamp()
    return status


class WolSwitchBody(InputModel):
    """Options of ``wol enable|disable``."""

    flag_only: bool = Field(
        default=False,
        description="change only mko's flag, without configuring the node's network card over SSH",
    )


class WolSwitchResponse(NodePublic):
    """The node after the change, with the operation that made it and what its network card reported."""

    operation_id: int
    operation_status: OperationStatus
    summary: str
    nic: dict[str, Any] | None = None


async def _switch(
    db: DbDep, settings: SettingsDep, actor: ActorDep, node_id: int, enable: bool, flag_only: bool
) -> WolSwitchResponse:
    change = await set_nic_wol(db.factory, settings, node_id, enable=enable, actor=actor, flag_only=flag_only)
    return WolSwitchResponse(
        **NodePublic.of(change.node).model_dump(),
        operation_id=change.operation.id,
        operation_status=change.operation.status,
        summary=change.operation.summary,
        nic=change.nic,
    )


@router.post("/nodes/{node_id:int}/wol/enable")
async def wol_enable(
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    node_id: int,
    body: WolSwitchBody | None = None,
) -> WolSwitchResponse:
    """Enable WoL: ``ethtool -s IFACE wol g`` on the node over SSH, made persistent and read back, then
    the flag. Fails (flag unchanged) when the node cannot be reached or its card cannot wake on a magic
    packet (409); ``{"flag_only": true}`` sets only the flag."""
    return await _switch(db, settings, actor, node_id, True, (body or WolSwitchBody()).flag_only)


@router.post("/nodes/{node_id:int}/wol/disable")
async def wol_disable(
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    node_id: int,
    body: WolSwitchBody | None = None,
) -> WolSwitchResponse:
    """Disable WoL: ``ethtool -s IFACE wol d`` on the node (persistent), then the flag (wakes refused)."""
    return await _switch(db, settings, actor, node_id, False, (body or WolSwitchBody()).flag_only)


@router.put("/nodes/{node_id:int}/wol/configure")
def wol_configure(
    session: SessionDep, actor: ActorDep, admin: AdminDep, node_id: int, body: WolConfigure
) -> NodePublic:
    """Change the WoL fields sent; nothing else changes, and nothing at all when one field is wrong."""
    node, _ = configure_wol(session, node_id, body, actor, may_rebind_secrets=admin)
    return NodePublic.of(node)
