"""Wake agents: the list for people (viewer), and heartbeat, claim and report for agents (role agent)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from mko.agents import registry as agents_registry
from mko.agents.claims import claim_wait, report_job
from mko.agents.schemas import AgentHeartbeat, AgentPublic, ClaimRequest, JobReport
from mko.http.deps import SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.http.security import PrincipalDep

__all__ = ["agent_router", "router"]

router = APIRouter(prefix="/api", tags=["agents"], route_class=MkoRoute)
#: Included with ``require(Role.AGENT)``: only agent (and admin) tokens get here, and agent tokens
#: get nowhere else.
agent_router = APIRouter(prefix="/api/agents", tags=["agents"], route_class=MkoRoute)


@router.get("/agents")
def list_agents(session: SessionDep, settings: SettingsDep) -> list[AgentPublic]:
    """Every wake agent: its site, online or offline, and its last heartbeat."""
    return agents_registry.list_agents(session, settings)


@agent_router.post("/heartbeat")
def heartbeat(
    session: SessionDep, settings: SettingsDep, principal: PrincipalDep, body: AgentHeartbeat
) -> dict[str, Any]:
    """Register or refresh the calling agent; the answer tells it how often to come back."""
    agent = agents_registry.heartbeat(session, principal, body)
    return {
        "name": agent.name,
        "site": agent.site,
        "heartbeat_interval": settings.agent_heartbeat_interval,
        "offline_after": settings.agent_offline_after,
        "claim_wait": settings.agent_claim_wait,
    }


@agent_router.post(
    "/claim",
    responses={204: {"description": "no job arrived during the wait"}},
)
async def claim(request: Request, settings: SettingsDep, principal: PrincipalDep, body: ClaimRequest) -> Any:
    """Long poll: the next queued wake job of the agent's site (claimed by it alone), or 204."""
    job = await claim_wait(
        request.app.state.session_factory, settings, principal, body, gone=request.is_disconnected
    )
    if job is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return job


@agent_router.post("/jobs/{job_id:int}/result")
def report(session: SessionDep, principal: PrincipalDep, job_id: int, body: JobReport) -> dict[str, Any]:
    """The claimed job's per-node outcomes; they become the steps of the wake's operation."""
    job = report_job(session, principal, job_id, body)
    return {"job_id": job.id, "status": job.status.value}
