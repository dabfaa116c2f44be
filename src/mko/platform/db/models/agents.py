"""Wake agents (mko.agents): the agents of remote sites and the wake jobs queued for them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mko.platform.db.models.base import Base, _enum, utcnow

__all__ = ["Agent", "WakeJob", "WakeJobStatus"]


class WakeJobStatus(enum.StrEnum):
    """Life cycle of a wake job: queued → claimed (by one agent) → done or failed."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"


class Agent(Base):
    """A ``mko agent`` process in another broadcast domain; registered and kept alive by its heartbeats."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    # The token it registered with: another token cannot take the name over while this one is valid.
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="SET NULL"))
    host: Mapped[str] = mapped_column(String(253), default="")
    version: Mapped[str] = mapped_column(String(50), default="")
    last_heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)


class WakeJob(Base):
    """The nodes of one site in one wake operation, for that site's agents to wake and probe locally.

    ``nodes`` holds what an agent needs per node (MAC, broadcast, port, method, interface, probe address
    and port); a SecureOn password is only referenced (``secureon: true``) and read from the node when an
    agent claims the job, so it is never copied into the queue.
    """

    __tablename__ = "wake_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[WakeJobStatus] = mapped_column(
        _enum(WakeJobStatus, "wake_job_status"), default=WakeJobStatus.QUEUED, index=True
    )
    node_ids: Mapped[list[int]] = mapped_column(JSON)
    nodes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    schedule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_at: Mapped[datetime | None] = mapped_column()
    # {"nodes": [NodeOutcome.as_dict(), …]} from the agent, or {"error": …} when it failed as a whole.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Never claimed after this (the wake's timeout has passed); the waiting operation gives up then.
    expires_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


# Revision 0018: every foreign key indexed.
Index("ix_agents_token_id", Agent.token_id)
