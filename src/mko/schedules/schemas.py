"""A schedule as created and as shown to people."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from mko.platform.db.models.operations import OperationStatus
from mko.platform.db.models.schedules import ScheduleAction
from mko.platform.validation import FREE_TEXT, InputModel

__all__ = ["ScheduleCreate", "SchedulePublic"]


class ScheduleCreate(InputModel):
    """A new schedule: what, on which node or cluster, when (cron + time zone), and wake options."""

    name: str = Field(min_length=1, max_length=200)
    action: ScheduleAction = ScheduleAction.WAKE
    cron: str = Field(description="five fields, e.g. '30 7 * * 1-5', or @daily / @hourly …")
    timezone: str | None = Field(default=None, description="IANA time zone; default from settings (UTC)")
    cluster_id: int | None = None
    node_id: int | None = None
    wait: bool = Field(default=False, description="probe woken nodes and re-send until they answer")
    timeout: float | None = Field(default=None, description="seconds to wait with wait=true")
    retries: int | None = Field(default=None, description="magic packets per node")
    delay: float | None = Field(default=None, description="seconds between packets")
    notify_urls: Annotated[list[str], FREE_TEXT] = Field(
        default=[], description="apprise URLs told when a run fails"
    )
    enabled: bool = True


class SchedulePublic(BaseModel):
    """A schedule as shown: its target, next runs and last outcome (notification URLs masked)."""

    id: int
    name: str
    action: ScheduleAction
    cron: str
    timezone: str
    cluster_id: int | None
    node_id: int | None
    target: str
    options: dict[str, Any]
    enabled: bool
    notify_urls: list[str]
    next_runs: list[datetime] = Field(description="the next three run instants (UTC); empty when paused")
    next_run_local: str | None = Field(description="the next run in the schedule's time zone")
    last_run_at: datetime | None
    last_operation_id: int | None
    last_status: OperationStatus | None
    created_at: datetime
