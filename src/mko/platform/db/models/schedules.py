"""Cron schedules of cluster wakes and shutdowns."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mko.platform.db.models.base import Base, _enum, utcnow
from mko.platform.db.models.operations import OperationStatus

__all__ = ["Schedule", "ScheduleAction"]


class ScheduleAction(enum.StrEnum):
    """What a schedule does at its times."""

    WAKE = "wake"
    SHUTDOWN = "shutdown"  # of a cluster, through the graceful path (refused until that exists)


class Schedule(Base):
    """At the times of a cron expression in a time zone, wake a node or cluster (or shut a cluster down)."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    action: Mapped[ScheduleAction] = mapped_column(_enum(ScheduleAction, "schedule_action"))
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    cron: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. wait, timeout, retries, delay
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_urls_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet token of a JSON list
    # Runs up to this instant have been handled (run, or reported missed); later ones are still due.
    last_checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column()  # the scheduled instant of the last run
    last_operation_id: Mapped[int | None] = mapped_column(Integer)
    last_status: Mapped[OperationStatus | None] = mapped_column(_enum(OperationStatus, "operation_status"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
