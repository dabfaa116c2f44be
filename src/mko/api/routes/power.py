"""Node power actions and status, with whichever driver the node has: ``/api/nodes/{id}/power``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from mko import node_power
from mko.api.background import launch, result_or_accepted
from mko.api.deps import ActorDep, SessionDep, SettingsDep
from mko.db.models import OperationStatus
from mko.validation import InputModel

router = APIRouter(prefix="/api", tags=["power"])


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


@router.post("/nodes/{node_id}/power")
async def power_action(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
    node_id: int,
    body: PowerBody,
) -> PowerResponse:
    """Power a node on, off or soft-off through its driver (409 with the reason when it cannot)."""
    prepared = node_power.start_power(
        session, settings, node_id, body.action, actor=actor, wait=body.wait, timeout=body.timeout
    )
    task = launch(request.app, node_power.run_power(request.app.state.session_factory, settings, prepared))
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


@router.get("/nodes/{node_id}/power")
async def power_status(session: SessionDep, settings: SettingsDep, node_id: int) -> dict[str, Any]:
    """The node's power state as its driver reports it (magic-packet nodes: a TCP probe)."""
    return await node_power.power_status(session, settings, node_id)
