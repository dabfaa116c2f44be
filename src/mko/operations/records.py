"""Every power action is an Operation: who asked, from where, its steps and its result."""

from __future__ import annotations

import getpass
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, bindparam, func, select
from sqlalchemy.orm import Session, aliased, defer, selectinload

from mko.operations.identity import current_instance
from mko.operations.ownership import close_orphaned, keep_alive, stamp
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.errors import NotFoundError

__all__ = [
    "Actor",
    "finish_operation",
    "get_operation",
    "last_step_for_node",
    "last_step_id",
    "last_steps_for_nodes",
    "list_for_node",
    "list_operations",
    "record_step",
    "start_operation",
]

log = logging.getLogger("mko.operations")


@dataclass(frozen=True)
class Actor:
    """Who asked for an action, and from where."""

    name: str
    source: str = ""

    @classmethod
    def cli(cls) -> Actor:
        """The local OS user running the CLI."""
        return cls(name=f"cli:{getpass.getuser()}", source="local")


def start_operation(
    session: Session,
    *,
    kind: str,
    target_type: str,
    target_id: int | None,
    actor: Actor,
    parameters: dict[str, Any] | None = None,
    summary: str = "",
) -> Operation:
    """Create a running operation and log who started it."""
    operation = Operation(
        instance=current_instance(),
        kind=kind,
        target_type=target_type,
        target_id=target_id,
        actor=actor.name,
        source=actor.source,
        status=OperationStatus.RUNNING,
        summary=summary,
        parameters=parameters or {},
        result={},
        started_at=utcnow(),
    )
    stamp(operation)
    session.add(operation)
    session.commit()
    keep_alive(session)
    log.info(
        "operation %s started: %s %s %s by %s from %s",
        operation.id,
        kind,
        target_type,
        target_id,
        actor.name,
        actor.source or "-",
    )
    return operation


def record_step(
    session: Session,
    operation: Operation,
    *,
    name: str,
    status: OperationStatus,
    node_id: int | None = None,
    message: str = "",
    detail: dict[str, Any] | None = None,
    started_at: Any = None,
) -> OperationStep:
    """Append a finished (or running) step to an operation."""
    now = utcnow()
    step = OperationStep(
        operation_id=operation.id,
        seq=len(operation.steps) + 1,
        node_id=node_id,
        name=name,
        status=status,
        message=message,
        detail=detail or {},
        started_at=started_at or now,
        finished_at=None if status in (OperationStatus.RUNNING, OperationStatus.PENDING) else now,
    )
    operation.steps.append(step)
    session.commit()
    return step


def finish_operation(
    session: Session,
    operation: Operation,
    *,
    status: OperationStatus,
    summary: str,
    result: dict[str, Any] | None = None,
) -> Operation:
    """Close an operation with its outcome and log it."""
    operation.status = status
    operation.summary = summary
    if result is not None:
        operation.result = result
    operation.finished_at = utcnow()
    session.commit()
    log.info("operation %s %s: %s", operation.id, status.value, summary)
    return operation


def get_operation(session: Session, operation_id: int) -> Operation:
    """The operation with its steps, or NotFoundError (closed as interrupted first if its owner is gone)."""
    close_orphaned(session)
    operation = session.get(Operation, operation_id, options=[selectinload(Operation.steps)])
    if operation is None:
        raise NotFoundError("operation", operation_id)
    return operation


def list_operations(
    session: Session,
    *,
    limit: int = 50,
    kind: str | None = None,
    target_type: str | None = None,
    target_id: int | None = None,
    actor: str | None = None,
    details: bool = True,
    status: Sequence[OperationStatus] = (),
) -> Sequence[Operation]:
    """Newest operations first, optionally filtered; those whose owner is gone are closed first.

    ``details=False`` (lists that show one line per operation) loads neither the steps nor the
    parameters and result: a wake of 10,000 nodes has 10,000 steps and a result naming every node.
    ``status``: only operations in one of these states.
    """
    close_orphaned(session)
    options = (
        [selectinload(Operation.steps)]
        if details
        else [defer(Operation.parameters), defer(Operation.result)]  # steps: loaded only if read
    )
    query = select(Operation).options(*options).order_by(Operation.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(Operation.kind == kind)
    if target_type is not None:
        query = query.where(Operation.target_type == target_type)
    if target_id is not None:
        query = query.where(Operation.target_id == target_id)
    if actor is not None:
        query = query.where(Operation.actor == actor)
    if status:
        query = query.where(Operation.status.in_(status))
    return session.scalars(query).all()


def last_step_for_node(session: Session, node_id: int, kind_prefix: str) -> OperationStep | None:
    """The newest step about ``node_id`` in operations whose kind starts with ``kind_prefix``.

    One query that walks the node's steps newest first (index ``ix_operation_steps_node_id``) and
    stops at the first match: a node's status page costs the same after 10 wakes and after 10,000.
    """
    return session.scalars(_LAST_STEP, {"node_id": node_id, "kind_prefix": kind_prefix}).first()


def last_step_id(node_id: ColumnElement[int], kind_prefix: str) -> ScalarSelect[int]:
    """:func:`last_step_for_node`'s step id as a subquery, for a query that reads more beside it."""
    step, operation = aliased(OperationStep), aliased(Operation)
    return (
        select(step.id)
        .join(operation, operation.id == step.operation_id)
        .where(step.node_id == node_id)
        .where(operation.kind.startswith(kind_prefix))
        .order_by(step.id.desc())
        .limit(1)
        .scalar_subquery()
    )


# Built once: building a statement cost more than running it (the SQL is cached on the object).
_LAST_STEP = (
    select(OperationStep)
    .join(Operation)
    .where(OperationStep.node_id == bindparam("node_id"))
    .where(Operation.kind.startswith(bindparam("kind_prefix")))
    .order_by(OperationStep.id.desc())
    .limit(1)
)


# Node ids per IN (...) list: far below every database's bound-parameter limit.
_IDS_PER_QUERY = 1000


def last_steps_for_nodes(
    session: Session, node_ids: Iterable[int], kind_prefix: str, name_prefix: str = ""
) -> dict[int, OperationStep]:
    """The newest step about each of ``node_ids`` in operations whose kind starts with ``kind_prefix``
    (and whose name starts with ``name_prefix``): one query per 1,000 nodes (index
    ``ix_operation_steps_node_id``), never one per node."""
    ids = sorted(set(node_ids))
    found: dict[int, OperationStep] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        newest = (
            select(func.max(OperationStep.id))
            .join(Operation)
            .where(OperationStep.node_id.in_(ids[start : start + _IDS_PER_QUERY]))
            .where(Operation.kind.startswith(kind_prefix))
            .group_by(OperationStep.node_id)
        )
        if name_prefix:
            newest = newest.where(OperationStep.name.startswith(name_prefix, autoescape=True))
        for step in session.scalars(select(OperationStep).where(OperationStep.id.in_(newest))):
            if step.node_id is not None:
                found[step.node_id] = step
    return found


def list_for_node(session: Session, node_id: int, limit: int = 20) -> Sequence[Operation]:
    """Operations that targeted this node or had a step about it, newest first (orphans closed first)."""
    close_orphaned(session)
    stepped = select(OperationStep.operation_id).where(OperationStep.node_id == node_id)
    query = (
        select(Operation)
        .options(selectinload(Operation.steps))
        .where(
            ((Operation.target_type == "node") & (Operation.target_id == node_id)) | Operation.id.in_(stepped)
        )
        .order_by(Operation.id.desc())
        .limit(limit)
    )
    return session.scalars(query).all()
