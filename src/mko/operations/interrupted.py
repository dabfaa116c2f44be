"""Closing an operation whose owner died: the reason in words and the failed result."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from mko.operations.records import finish_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus

if TYPE_CHECKING:
    pass

__all__ = ["fail_interrupted", "interrupted_reason"]

log = logging.getLogger("mko.failover")


OPEN = (OperationStatus.PENDING, OperationStatus.RUNNING)


def interrupted_reason(instance: str, *, repeatable: bool = False) -> str:
    """The summary of an operation a failover ended."""
    why = f"interrupted by failover on {instance}"
    if repeatable:
        return why
    return f"{why}: not resumed (only wakes are repeated; a power-off never runs twice)"


def fail_interrupted(session: Session, operation: Operation, instance: str) -> None:
    """Finish an operation that must not be repeated as failed, saying which instance it died on."""
    reason = interrupted_reason(instance)
    now = utcnow()
    for step in operation.steps:
        if step.status in OPEN:
            step.status, step.finished_at = OperationStatus.FAILED, now
            step.message = f"{step.message}; {reason}" if step.message else reason
    finish_operation(
        session,
        operation,
        status=OperationStatus.FAILED,
        summary=reason,
        result={**operation.result, "interrupted_by_failover": instance},
    )
    log.warning("operation %s (%s) %s", operation.id, operation.kind, reason)
