"""Operations: every power action with its actor, its steps and its result."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mko.platform.db.models.base import Base, _enum, utcnow

__all__ = ["Operation", "OperationStatus", "OperationStep"]


class OperationStatus(enum.StrEnum):
    """Life cycle of an operation and of each of its steps."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Operation(Base):
    """One action (wake, shutdown, configure, rule execution) with who asked, its steps and result."""

    __tablename__ = "operations"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    target_type: Mapped[str] = mapped_column(String(20))
    target_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[OperationStatus] = mapped_column(
        _enum(OperationStatus, "operation_status"), default=OperationStatus.PENDING, index=True
    )
    summary: Mapped[str] = mapped_column(Text, default="")
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # The serve instance running it (mko.ha): a new leader resumes or fails those of dead instances.
    instance: Mapped[str | None] = mapped_column(String(200), index=True)
    # The process running it (mko.operations.ownership): closed as interrupted only once that process is gone.
    owner_host: Mapped[str | None] = mapped_column(String(253))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_start: Mapped[str | None] = mapped_column(String(100))  # "<start ticks>@<boot id>/<pid ns>"
    heartbeat_at: Mapped[datetime | None] = mapped_column()  # refreshed while it is open

    steps: Mapped[list[OperationStep]] = relationship(
        back_populates="operation", order_by="OperationStep.seq", cascade="all, delete-orphan"
    )


class OperationStep(Base):
    """One step of an operation, usually one action on one node."""

    __tablename__ = "operation_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[OperationStatus] = mapped_column(
        _enum(OperationStatus, "operation_status"), default=OperationStatus.PENDING
    )
    message: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    operation: Mapped[Operation] = relationship(back_populates="steps")


# Revision 0018: the last wake per node, operations of a target or an actor, found by index.
Index("ix_operation_steps_node_id", OperationStep.node_id, OperationStep.id)
Index("ix_operations_target", Operation.target_type, Operation.target_id)
Index("ix_operations_actor", Operation.actor)
