"""An outage as shown to people."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

__all__ = ["OutagePublic"]


class OutagePublic(BaseModel):
    """A cluster powered down because of a UPS: what was up, what mko powered off, how it ended."""

    id: int
    ups_id: int
    cluster_id: int
    event: str
    event_id: int | None
    phase: str
    open: bool
    reason: str
    nodes_up: list[str]
    nodes_off: list[str]
    shutdown_operation_id: int | None
    restore_operation_id: int | None
    power_cycle: dict[str, Any]
    host_shutdown: dict[str, Any]
    summary: str
    started_at: datetime
    updated_at: datetime
    closed_at: datetime | None
