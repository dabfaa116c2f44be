"""Operations: what happened, who asked, step by step."""

from __future__ import annotations

from fastapi import APIRouter, Query

from mko.http.deps import SessionDep
from mko.http.routing import MkoRoute
from mko.operations import records as operations_records
from mko.operations.schemas import OperationBrief, OperationPublic
from mko.platform.db.models.operations import OperationStatus

router = APIRouter(prefix="/api", tags=["operations"], route_class=MkoRoute)


@router.get("/operations")
def list_operations(
    session: SessionDep,
    limit: int = Query(default=50, ge=1, le=1000),
    kind: str | None = None,
    target_type: str | None = None,
    target_id: int | None = None,
    actor: str | None = None,
) -> list[OperationPublic]:
    """Newest first, with optional filters."""
    found = operations_records.list_operations(
        session, limit=limit, kind=kind, target_type=target_type, target_id=target_id, actor=actor
    )
    return [OperationPublic.model_validate(op) for op in found]


@router.get("/operations/brief")
def list_operations_brief(
    session: SessionDep,
    limit: int = Query(default=20, ge=1, le=1000),
    status: list[OperationStatus] = Query(default=[], description="only these states (repeat it)"),
) -> list[OperationBrief]:
    """Newest first, one line each (no steps, parameters or result), ``status`` filtering:
    ``?status=running&status=pending`` is what is under way. Cheap to poll whatever an operation's size."""
    found = operations_records.list_operations(session, limit=limit, details=False, status=status)
    return [OperationBrief.model_validate(op) for op in found]


@router.get("/operations/{operation_id:int}")
def get_operation(session: SessionDep, operation_id: int) -> OperationPublic:
    """One operation with its steps (poll it to follow a running one)."""
    return OperationPublic.model_validate(operations_records.get_operation(session, operation_id))
