"""Reading the node list at any size: filters, one page, the total, in two queries whatever the page.

The API's ``GET /api/nodes``, the web's nodes page and ``mko node list`` all read through here, so a
filter means the same everywhere. ``search`` matches a substring of the host name or the IP address,
case-insensitively, with ``%`` and ``_`` taken literally.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, selectinload

from mko.platform.db.models.inventory import Cluster, Node, NodeRole
from mko.platform.errors import NotFoundError
from mko.platform.paging import Page
from mko.platform.validation import printable

__all__ = [
    "NodeFilters",
    "NodeState",
    "check_cluster",
    "count_nodes",
    "first_nodes_per_cluster",
    "node_table",
    "page_of_nodes",
    "select_nodes",
]

SEARCH_MAX = 253  # a host name's longest


class NodeState(enum.StrEnum):
    """What the background reachability probes last saw: up, down, or not probed yet."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeFilters:
    """Which nodes a list shows; every field None means all nodes."""

    cluster_id: int | None = None
    role: NodeRole | None = None
    state: NodeState | None = None
    search: str | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses of these filters (each on an indexed column, except the substring search)."""
        where: list[ColumnElement[bool]] = []
        if self.cluster_id is not None:
            where.append(Node.cluster_id == self.cluster_id)
        if self.role is not None:
            where.append(Node.role == self.role)
        if self.state is NodeState.UP:
            where.append(Node.reachable.is_(True))
        elif self.state is NodeState.DOWN:
            where.append(Node.reachable.is_(False))
        elif self.state is NodeState.UNKNOWN:
            where.append(Node.reachable.is_(None))
        if self.search:
            text = self.search.strip()[:SEARCH_MAX]
            where.append(
                or_(
                    Node.hostname.icontains(text, autoescape=True),
                    Node.ip_address.contains(text, autoescape=True),
                )
            )
        return where

    def query_args(self) -> dict[str, Any]:
        """The filters as query parameters (for links to other pages of the same list)."""
        values = {
            "cluster_id": self.cluster_id,
            "role": self.role,
            "state": self.state,
            "search": self.search,
        }
        return {key: str(value) for key, value in values.items() if value not in (None, "")}


def check_cluster(session: Session, filters: NodeFilters) -> None:
    """NotFoundError when the filters name a cluster that does not exist."""
    if filters.cluster_id is not None and session.get(Cluster, filters.cluster_id) is None:
        raise NotFoundError("cluster", filters.cluster_id)


def select_nodes(session: Session, filters: NodeFilters, page: Page | None = None) -> list[Node]:
    """The nodes these filters match, by id, one page of them (all without ``page``), with the cluster
    and Proxmox host loaded in one query each (what public views and power snapshots read)."""
    check_cluster(session, filters)
    query = (
        select(Node)
        .options(selectinload(Node.proxmox_host), selectinload(Node.cluster))
        .where(*filters.clauses())
        .order_by(Node.id)
    )
    if page is not None:
        query = query.offset(page.offset).limit(page.limit)
    return list(session.scalars(query))


def count_nodes(session: Session, filters: NodeFilters) -> int:
    """How many nodes these filters match."""
    return session.scalar(select(func.count(Node.id)).where(*filters.clauses())) or 0


def page_of_nodes(session: Session, filters: NodeFilters, page: Page) -> tuple[Sequence[Node], int]:
    """One page of the filtered nodes and how many match in all."""
    nodes = select_nodes(session, filters, page)
    return nodes, _total(session, filters, page, len(nodes))


def first_nodes_per_cluster(session: Session, per_cluster: int) -> tuple[list[Node], dict[int | None, int]]:
    """The first ``per_cluster`` nodes (by id) of every cluster and of the nodes in none, in one query,
    and how many nodes each cluster has (``None``: in no cluster): a view of every cluster that costs
    the same at 100 nodes and at 10,000."""
    ranked = select(
        Node.id, func.row_number().over(partition_by=Node.cluster_id, order_by=Node.id).label("rank")
    ).subquery()
    first = select(ranked.c.id).where(ranked.c.rank <= per_cluster)
    nodes = list(session.scalars(select(Node).where(Node.id.in_(first)).order_by(Node.id)))
    counts = session.execute(select(Node.cluster_id, func.count(Node.id)).group_by(Node.cluster_id))
    return nodes, {cluster_id: count for cluster_id, count in counts}


def node_table(
    session: Session, filters: NodeFilters, page: Page, columns: Sequence[str]
) -> tuple[list[tuple[str, ...]], int]:
    """One page of the filtered nodes as text cells of ``columns`` (Node attributes; None as "—"),
    read with one core query (no ORM objects), and how many match in all: the CLI's table."""
    check_cluster(session, filters)
    query = select(*(getattr(Node, column) for column in columns)).where(*filters.clauses()).order_by(Node.id)
    rows = [
        tuple(_text(value) for value in row)
        for row in session.execute(query.offset(page.offset).limit(page.limit))
    ]
    return rows, _total(session, filters, page, len(rows))


def _text(value: object) -> str:
    if value is None:
        return "—"
    return printable(value.value if isinstance(value, enum.Enum) else value, limit=4000, backslashes=False)


def _total(session: Session, filters: NodeFilters, page: Page, shown: int) -> int:
    if page.limit is not None and (shown == page.limit or (page.offset and not shown)):
        return count_nodes(session, filters)  # more may follow, or the offset overshot: count them
    return page.offset + shown
