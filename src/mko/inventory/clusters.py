"""Clusters: create, read, update, delete, with every check in one place."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.inventory.power_settings import refuse_moving_secureon
from mko.inventory.schemas import ClusterCreate, ClusterUpdate
from mko.platform import validation
from mko.platform.db.models.inventory import Cluster, Node
from mko.platform.errors import ConflictError, InputError, NotFoundError

__all__ = [
    "create_cluster",
    "delete_cluster",
    "get_cluster",
    "list_clusters",
    "node_counts",
    "update_cluster",
]


DESCRIPTION_MAX = 1000


def create_cluster(session: Session, data: ClusterCreate) -> Cluster:
    """Add a cluster; names are unique."""
    name = _cluster_name(data.name)
    site = _cluster_site(data.site)
    description = validation.check_text(data.description, "description", max_length=DESCRIPTION_MAX)
    cluster = Cluster(name=name, description=description, site=site, power_stagger=data.power_stagger)
    session.add(cluster)
    _commit(session, f"a cluster named {name!r} already exists")
    return cluster


def _cluster_name(value: str | None) -> str:
    name = validation.check_text(value or "", "name", max_length=100).strip(" ")
    if not name:
        raise InputError("name", "must not be empty")
    return name


def _cluster_site(value: str | None) -> str | None:
    # "local" on a cluster is the same as no site; on a node it overrides the cluster's site.
    site = None if value is None else validation.validate_site(value)
    return None if site == "local" else site


def get_cluster(session: Session, cluster_id: int) -> Cluster:
    """The cluster with this id, or NotFoundError."""
    cluster = session.get(Cluster, cluster_id)
    if cluster is None:
        raise NotFoundError("cluster", cluster_id)
    return cluster


def list_clusters(session: Session) -> list[Cluster]:
    """All clusters by id."""
    return list(session.scalars(select(Cluster).order_by(Cluster.id)))


def node_counts(session: Session) -> dict[int, int]:
    """Number of nodes per cluster id."""
    rows = session.execute(
        select(Node.cluster_id, func.count(Node.id))
        .where(Node.cluster_id.is_not(None))
        .group_by(Node.cluster_id)
    )
    return {cluster_id: count for cluster_id, count in rows if cluster_id is not None}


def update_cluster(
    session: Session, cluster_id: int, data: ClusterUpdate, *, may_rebind_secrets: bool = False
) -> Cluster:
    """Change the fields sent.

    A new site hands the SecureOn passwords of the nodes that follow the cluster's site to that site's
    wake agents: unless ``may_rebind_secrets`` (an admin), that is refused while such nodes hold one.
    """
    cluster = get_cluster(session, cluster_id)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes:
        cluster.name = _cluster_name(changes["name"])
    if changes.get("description") is not None:
        cluster.description = validation.check_text(
            changes["description"], "description", max_length=DESCRIPTION_MAX
        )
    if "site" in changes:
        site = _cluster_site(changes["site"])
        if site != cluster.site and not may_rebind_secrets:
            refuse_moving_secureon(session, cluster, site)
        cluster.site = site
    if "power_stagger" in changes:
        cluster.power_stagger = changes["power_stagger"] or None
    _commit(session, f"a cluster named {cluster.name!r} already exists")
    return cluster


def empty_cluster(cluster_id: int) -> ConflictError:
    """The refusal of an action on a cluster without nodes, naming the command that adds one."""
    add = f"`mko node add HOSTNAME IP --cluster-id {cluster_id}`"
    return ConflictError(f"cluster {cluster_id} has no nodes: add one with {add}")


def delete_cluster(session: Session, cluster_id: int) -> None:
    """Remove an empty cluster; one with nodes is a conflict."""
    cluster = get_cluster(session, cluster_id)
    count = node_counts(session).get(cluster_id, 0)
    if count:
        raise ConflictError(
            f"cluster {cluster_id} still has {count} node(s); remove or move them first"
            f" (`mko node list --cluster-id {cluster_id}`, then `mko node remove ID`"
            " or `mko node update ID --cluster-id OTHER`)"
        )
    session.delete(cluster)
    _commit(session, "cluster is still referenced")


def _commit(session: Session, conflict_message: str | Callable[[], str]) -> None:
    """Commit, or roll back completely and report a duplicate as a conflict."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        message = conflict_message if isinstance(conflict_message, str) else conflict_message()
        raise ConflictError(message) from None
    except BaseException:
        session.rollback()
        raise
