"""Node power actions and status, with whichever driver the node has: ``/api/nodes/{id}/power``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from mko.http.background import launch, result_or_accepted
from mko.http.deps import ActorDep, DbDep, SettingsDep
from mko.http.live import LiveReads
from mko.http.routing import MkoRoute
from mko.http.security import PrincipalDep, require_operator_for
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.validation import InputModel
from mko.power.base import OutcomeState, PowerState
from mko.wol.node_power import PowerTarget, describe_power, power_target, read_power, run_power, start_power

VERIFIED_STATES = {OutcomeState.UP.value: PowerState.ON, OutcomeState.OFF.value: PowerState.OFF}

router = APIRouter(prefix="/api", tags=["power"], route_class=MkoRoute)


class PowerBody(InputModel):
    """A power action. ``wait`` defaults to verifying where the driver can read the power state."""

    action: Literal["on", "off", "soft"] = Field(description="on; off (hard); soft (ACPI / graceful)")
    wait: bool | None = Field(default=None, description="verify the state was reached (default: if possible)")
    timeout: float | None = Field(default=None, description="seconds to wait for the state (default 120)")


class PowerResponse(BaseModel):
    """The action's operation; ``status`` is ``running`` when it continues in the background (HTTP 202)."""

    operation_id: int
    status: OperationStatus
    summary: str
    nodes: list[dict[str, Any]] = []
    operation_url: str


@router.post("/nodes/{node_id:int}/power")
async def power_action(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    node_id: int,
    body: PowerBody,
) -> PowerResponse:
    """Power a node on, off or soft-off through its driver (409 with the reason when it cannot)."""
    prepared = await db.run(
        lambda session: start_power(
            session, settings, node_id, body.action, actor=actor, wait=body.wait, timeout=body.timeout
        )
    )
    task = launch(request.app, run_power(request.app.state.session_factory, settings, prepared))
    task.add_done_callback(_remember_state(request.app.state.live_reads, node_id))
    url = f"/api/operations/{prepared.operation_id}"
    operation = await result_or_accepted(task, settings.api_sync_wait, response, url)
    if operation is None:
        return PowerResponse(
            operation_id=prepared.operation_id,
            status=OperationStatus.RUNNING,
            summary=f"power {body.action} continues; follow {url}",
            operation_url=url,
        )
    return PowerResponse(
        operation_id=operation.id,
        status=operation.status,
        summary=operation.summary,
        nodes=operation.result.get("nodes", []),
        operation_url=url,
    )


@router.get("/nodes/{node_id:int}/power")
async def power_status(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    node_id: int,
    refresh: bool = Query(
        default=False,
        description="ask the node's driver now (operator; at most once per live_read_interval per node)",
    ),
) -> dict[str, Any]:
    """The node's power state as last read, with ``checked_at`` and ``age_seconds`` (``unknown`` until
    it was read); ``?refresh=true`` reads it now through its driver (magic-packet nodes: a TCP probe)."""
    target = await db.run(lambda session: power_target(session, node_id))
    live: LiveReads[PowerState] = request.app.state.live_reads
    key = ("power", node_id)
    if refresh:
        await require_operator_for(request, principal, "reading a node's power state now")
        fresh = await live.read(key, lambda: read_power(settings, target))
        return describe_power(target, fresh.result(), **fresh.stamp())
    last = live.last(key)
    if last is not None:
        error = None if last.error is None else str(last.error)
        return describe_power(target, last.value, **last.stamp(), error=error)
    if not target.driver.verify_by_query and target.probed_at is not None:
        # A magic-packet node's driver reads its probe port: the background refresher's last probe.
        state = PowerState.ON if target.probed_up else PowerState.OFF
        return describe_power(target, state, checked_at=target.probed_at, age_seconds=_age(target))
    return describe_power(target, None, checked_at=None, age_seconds=None)


def _remember_state(live: LiveReads[PowerState], node_id: int) -> Callable[[asyncio.Task[Operation]], None]:
    """A power action that verified the state it reached leaves it as the node's last known state."""

    def done(task: asyncio.Task[Operation]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        for outcome in task.result().result.get("nodes", []):
            state = (
                VERIFIED_STATES.get(outcome.get("state")) if outcome.get("verified_by") == "query" else None
            )
            if state is not None:
                live.put(("power", node_id), state)

    return done


def _age(target: PowerTarget) -> float | None:
    return None if target.probed_at is None else round((utcnow() - target.probed_at).total_seconds(), 1)
