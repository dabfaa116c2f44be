"""An operation and its steps as shown to people (API, CLI, web)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from mko.platform.db.models.operations import OperationStatus

__all__ = ["OperationBrief", "OperationPublic", "OperationStepPublic"]


class OperationStepPublic(BaseModel):
    """One step of an operation."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    node_id: int | None
    name: str
    status: OperationStatus
    message: str
    detail: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None


class OperationBrief(BaseModel):
    """An operation in one line: no steps, parameters or result (what a list or a dashboard polls)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    target_type: str
    target_id: int | None
    actor: str
    source: str
    status: OperationStatus
    summary: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class OperationPublic(OperationBrief):
    """An operation with its parameters, result and steps."""

    parameters: dict[str, Any]
    result: dict[str, Any]
    # The process carrying it out (mko.operations.ownership), and the serve instance under high availability.
    owner_host: str | None = None
    owner_pid: int | None = None
    heartbeat_at: datetime | None = None
    instance: str | None = None
    steps: list[OperationStepPublic] = []
