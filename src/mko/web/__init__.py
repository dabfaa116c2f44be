"""Server-rendered web pages over the same services as the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from mko import inventory, operations
from mko.api.deps import SessionDep

__all__ = ["router"]

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, session: SessionDep) -> HTMLResponse:
    """Clusters, nodes and the latest operations."""
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "clusters": inventory.list_clusters(session),
            "counts": inventory.node_counts(session),
            "nodes": inventory.list_nodes(session),
            "operations": operations.list_operations(session, limit=10),
        },
    )
