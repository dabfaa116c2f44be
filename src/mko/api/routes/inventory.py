"""Clusters and nodes CRUD: parse → service → schema."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response, status

from mko.http.deps import DbDep, ReadSessionDep, SessionDep, SettingsDep
from mko.http.live import LiveReads
from mko.http.paging import NodeFiltersDep, PageDep, set_total
from mko.http.routing import MkoRoute
from mko.http.security import AdminDep, PrincipalDep, require_operator_for
from mko.inventory import clusters as inventory_clusters
from mko.inventory import nodes as inventory_nodes
from mko.inventory.clusters import node_counts
from mko.inventory.read import NodeFilters, page_of_nodes
from mko.inventory.schemas import (
    ClusterCreate,
    ClusterPublic,
    ClusterUpdate,
    NodeCreate,
    NodePublic,
    NodeUpdate,
)
from mko.wol import reachability
from mko.wol.node_state import with_states
from mko.wol.reachability import Reachability

router = APIRouter(prefix="/api", route_class=MkoRoute)


def _cluster_public(session: SessionDep, cluster_id: int) -> ClusterPublic:
    cluster = inventory_clusters.get_cluster(session, cluster_id)
    public = ClusterPublic.model_validate(cluster)
    public.node_count = node_counts(session).get(cluster.id, 0)
    return public


@router.get("/clusters", tags=["clusters"])
def list_clusters(session: ReadSessionDep) -> list[ClusterPublic]:
    """All clusters with their node counts."""
    counts = node_counts(session)
    result = []
    for cluster in inventory_clusters.list_clusters(session):
        public = ClusterPublic.model_validate(cluster)
        public.node_count = counts.get(cluster.id, 0)
        result.append(public)
    return result


@router.post("/clusters", status_code=status.HTTP_201_CREATED, tags=["clusters"])
def create_cluster(session: SessionDep, body: ClusterCreate) -> ClusterPublic:
    """Add a cluster."""
    return _cluster_public(session, inventory_clusters.create_cluster(session, body).id)


@router.get("/clusters/{cluster_id:int}", tags=["clusters"])
def get_cluster(session: ReadSessionDep, cluster_id: int) -> ClusterPublic:
    """One cluster."""
    return _cluster_public(session, cluster_id)


@router.patch("/clusters/{cluster_id:int}", tags=["clusters"])
def update_cluster(
    session: SessionDep, admin: AdminDep, cluster_id: int, body: ClusterUpdate
) -> ClusterPublic:
    """Change the fields sent (a new site for nodes holding SecureOn passwords needs an admin)."""
    inventory_clusters.update_cluster(session, cluster_id, body, may_rebind_secrets=admin)
    return _cluster_public(session, cluster_id)


@router.delete("/clusters/{cluster_id:int}", status_code=status.HTTP_204_NO_CONTENT, tags=["clusters"])
def delete_cluster(session: SessionDep, cluster_id: int) -> Response:
    """Remove an empty cluster."""
    inventory_clusters.delete_cluster(session, cluster_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/clusters/{cluster_id:int}/nodes", tags=["clusters"])
def list_cluster_nodes(session: ReadSessionDep, cluster_id: int) -> list[NodePublic]:
    """The nodes of one cluster."""
    return [NodePublic.of(node) for node in inventory_nodes.list_nodes(session, cluster_id)]


@router.get("/nodes", tags=["nodes"])
def list_nodes(
    session: ReadSessionDep, response: Response, filters: NodeFiltersDep, page: PageDep
) -> list[NodePublic]:
    """All nodes by id, or those the filters match (``cluster_id``, ``role``, ``state``, ``search``);
    ``limit``/``offset`` return one page. ``X-Total-Count`` says how many match in all."""
    nodes, total = page_of_nodes(session, filters, page)
    set_total(response, total)
    return [NodePublic.of(node) for node in nodes]


@router.get("/nodes/reachability", tags=["nodes"])
async def nodes_reachability(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    cluster_id: int | None = None,
    node_id: list[int] = Query(default=[], description="only these nodes (e.g. the rows of one page)"),
    refresh: bool = Query(
        default=False,
        description="probe the nodes now (operator; at most once per live_read_interval per cluster)",
    ),
) -> dict[int, Reachability]:
    """Every node's (or ``cluster_id``'s nodes') last probe result with its age (``up`` null: never
    probed) and its state (``off``, ``booting``: a wake went out and it does not answer yet, ``up``,
    ``Ready``: Kubernetes called it Ready since it came up, ``unknown``), from stored facts;
    ``?refresh=true`` probes them now, concurrently, on their probe ports, and stores it."""
    if not refresh:  # the refresher's cache: a page view never makes mko probe
        filters = NodeFilters(cluster_id=cluster_id)
        return await db.read(
            lambda session: with_states(
                session, settings, reachability.stored_reachability(session, filters, node_id)
            )
        )
    nodes = await db.read(lambda session: inventory_nodes.list_nodes(session, cluster_id))
    await require_operator_for(request, principal, "probing nodes now")
    live: LiveReads[dict[int, Reachability]] = request.app.state.live_reads
    reading = await live.read(
        ("reachability", cluster_id),
        lambda: reachability.probe_and_record(db.factory, nodes, settings.probe_timeout),
    )
    age = round(reading.age, 1)
    probed = {
        probed_id: result.model_copy(update={"age_seconds": age})
        for probed_id, result in reading.result().items()
    }
    return await db.read(lambda session: with_states(session, settings, probed))


@router.post("/nodes", status_code=status.HTTP_201_CREATED, tags=["nodes"])
def create_node(session: SessionDep, body: NodeCreate) -> NodePublic:
    """Add a node."""
    return NodePublic.of(inventory_nodes.create_node(session, body))


@router.get("/nodes/{node_id:int}", tags=["nodes"])
def get_node(session: ReadSessionDep, node_id: int) -> NodePublic:
    """One node."""
    return NodePublic.of(inventory_nodes.get_node(session, node_id))


@router.patch("/nodes/{node_id:int}", tags=["nodes"])
def update_node(session: SessionDep, admin: AdminDep, node_id: int, body: NodeUpdate) -> NodePublic:
    """Change the fields sent (moving a stored BMC or SecureOn password needs it again, or admin)."""
    return NodePublic.of(inventory_nodes.update_node(session, node_id, body, may_rebind_secrets=admin))


@router.delete("/nodes/{node_id:int}", status_code=status.HTTP_204_NO_CONTENT, tags=["nodes"])
def delete_node(session: SessionDep, node_id: int) -> Response:
    """Remove a node (its operation history stays)."""
    inventory_nodes.delete_node(session, node_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
