"""The operation record of a rule's execution: its steps and its end."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep

__all__ = []

log = logging.getLogger("mko.rules")


def _step(session: Session, operation: Operation, name: str, status: OperationStatus, message: str) -> None:
    now = utcnow()
    operation.steps.append(
        OperationStep(
            seq=len(operation.steps) + 1,
            name=name,
            status=status,
            message=message,
            detail={},
            started_at=now,
            finished_at=None if status in (OperationStatus.RUNNING, OperationStatus.PENDING) else now,
        )
    )
    session.commit()


def _finish(session: Session, operation: Operation, status: OperationStatus, summary: str) -> None:
    now = utcnow()
    for step in operation.steps:
        if step.status in (OperationStatus.RUNNING, OperationStatus.PENDING):
            step.status, step.finished_at = status, now
            if not step.message:
                step.message = summary
    operation.status = status
    operation.summary = summary
    operation.finished_at = now
    session.commit()
    log.info("operation %s %s: %s", operation.id, status.value, summary)
