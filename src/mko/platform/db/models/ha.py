"""High availability (mko.ha): the serve instances sharing a database, and each UPS's last seen state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mko.platform.db.models.base import Base, utcnow

__all__ = ["Instance", "UpsState"]


class Instance(Base):
    """One ``mko serve`` process: registered at start, heartbeating while it runs."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)  # MKO_INSTANCE_NAME or hostname:pid
    hostname: Mapped[str] = mapped_column(String(253))
    pid: Mapped[int] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(String(500))  # where its API answers, when known
    version: Mapped[str] = mapped_column(String(50), default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column()  # a clean exit; None while running (or killed)
    is_leader: Mapped[bool] = mapped_column(Boolean, default=False)
    leader_since: Mapped[datetime | None] = mapped_column()


class UpsState(Base):
    """The last state of a UPS as the leader saw it; a new leader compares the UPS with it, not afresh."""

    __tablename__ = "ups_state"

    ups_id: Mapped[int] = mapped_column(ForeignKey("ups.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str | None] = mapped_column(String(100))  # ups.status of the last good reading
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # EventDetector.export_state()
    version: Mapped[int] = mapped_column(Integer, default=0)  # bumped by every write (compare-and-set)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200))  # the instance that wrote it
