"""The dashboard: clusters, nodes, UPSes and recent operations."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mko.agents.registry import list_agents
from mko.http.deps import SessionDep
from mko.http.routing import MkoRoute
from mko.inventory.clusters import list_clusters, node_counts
from mko.operations.records import list_operations
from mko.web.pages.render import _render
from mko.web.pages.ups import _ups_statuses

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


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
