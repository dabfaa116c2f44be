"""Operation pages: the list and one operation with its steps."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mko.http.deps import SessionDep
from mko.http.routing import MkoRoute
from mko.operations.records import get_operation, list_operations
from mko.web.pages.render import _render

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


@router.get("/operations", response_class=HTMLResponse)
def operations_page(request: Request, session: SessionDep, kind: str | None = None) -> HTMLResponse:
    """The operation log, newest first."""
    return _render(
        request, "operations.html", operations=list_operations(session, limit=100, kind=kind, details=False)
    )


@router.get("/operations/{operation_id:int}", response_class=HTMLResponse)
def operation_page(request: Request, session: SessionDep, operation_id: int) -> HTMLResponse:
    """One operation with its steps; follows a running one live."""
    return _render(request, "operation_detail.html", operation=get_operation(session, operation_id))
