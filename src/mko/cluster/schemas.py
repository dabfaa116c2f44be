"""An outage and a preflight check as shown to people."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

__all__ = ["CheckPublic", "CheckResult", "NodeChecks", "OutagePublic"]


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


class CheckResult(BaseModel):
    """One check of one node: ``pass``, ``warn``, ``fail`` or ``n/a``, and the line naming the fix."""

    verdict: str
    reason: str


class NodeChecks(BaseModel):
    """A node's checks by name (ssh, sudo, graceful_shutdown, wol, restore_policy)."""

    node_id: int
    hostname: str
    checks: dict[str, CheckResult]


class CheckPublic(BaseModel):
    """A cluster's finished preflight check (the ``cluster_check`` operation)."""

    operation_id: int
    status: str
    summary: str
    actor: str
    finished_at: datetime | None
    counts: dict[str, int] = {}
    nodes: list[NodeChecks] = []
