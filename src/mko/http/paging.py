"""Query parameters shared by every paged list (``limit``, ``offset``) and the node list's filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Response

from mko.inventory.read import SEARCH_MAX, NodeFilters, NodeState
from mko.platform.db.models.inventory import NodeRole
from mko.platform.paging import MAX_LIMIT, MAX_OFFSET, Page

__all__ = ["TOTAL_HEADER", "NodeFiltersDep", "PageDep", "node_filters", "page_params", "set_total"]

TOTAL_HEADER = "X-Total-Count"


# Both are async although they only read the query: FastAPI runs a sync dependency in a worker thread,
# a hop that cost more than the whole parse.


async def page_params(
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_LIMIT, description="rows per page (default: all)")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")] = 0,
) -> Page:
    """``?limit=&offset=`` as a Page (out-of-range values are a 422 naming the parameter)."""
    return Page(limit=limit, offset=offset)


async def node_filters(
    cluster_id: int | None = None,
    role: NodeRole | None = None,
    state: Annotated[NodeState | None, Query(description="up, down or unknown (not probed yet)")] = None,
    search: Annotated[
        str | None, Query(max_length=SEARCH_MAX, description="part of the host name or IP address")
    ] = None,
) -> NodeFilters:
    """The node list's filters from the query string."""
    return NodeFilters(cluster_id=cluster_id, role=role, state=state, search=search or None)


def set_total(response: Response, total: int) -> None:
    """Tell the client how many rows match in all (the body stays a plain list)."""
    response.headers[TOTAL_HEADER] = str(total)


PageDep = Annotated[Page, Depends(page_params)]
NodeFiltersDep = Annotated[NodeFilters, Depends(node_filters)]
