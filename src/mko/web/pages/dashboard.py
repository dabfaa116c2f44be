"""The dashboard: every node as a card grouped by cluster, the UPSes, the agents and the operations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mko.agents.registry import list_agents
from mko.http.deps import SessionDep
from mko.http.routing import MkoRoute
from mko.inventory.clusters import list_clusters
from mko.inventory.read import first_nodes_per_cluster
from mko.operations.kinds import WAKE_KIND_PREFIX
from mko.operations.records import last_steps_for_nodes, list_operations
from mko.platform.db.models.operations import OperationStatus
from mko.web.forms import method_choices
from mko.web.pages.render import _render
from mko.web.pages.ups import _ups_statuses
from mko.wol.node_state import states_for

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


#: Node cards per cluster: the rest of a large cluster is one click away on the paged Nodes page. A
#: dashboard of 10,000 cards took seconds to render and tens of MiB to build.
CARDS_PER_CLUSTER = 100


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, session: SessionDep) -> HTMLResponse:
    """Nodes by cluster with their live state and one-click wakes, UPSes, agents, operations."""
    nodes, counts = first_nodes_per_cluster(session, CARDS_PER_CLUSTER)
    groups: list[dict[str, Any]] = [
        {
            "cluster": cluster,
            "nodes": [n for n in nodes if n.cluster_id == cluster.id],
            "total": counts.get(cluster.id, 0),
        }
        for cluster in list_clusters(session)
    ]
    loose = [n for n in nodes if n.cluster_id is None]
    if loose:
        groups.append({"cluster": None, "nodes": loose, "total": counts.get(None, 0)})
    return _render(
        request,
        "dashboard.html",
        groups=groups,
        last_wake=last_steps_for_nodes(session, [n.id for n in nodes], WAKE_KIND_PREFIX),
        live_states=states_for(session, request.app.state.settings, [n.id for n in nodes]),
        operations=list_operations(session, limit=10, details=False),
        running=list_operations(
            session, limit=20, details=False, status=(OperationStatus.RUNNING, OperationStatus.PENDING)
        ),
        upses=_ups_statuses(request, session),
        agents=list_agents(session, request.app.state.settings),
        method_labels={m["name"]: m["badge"] for m in method_choices()},
    )
