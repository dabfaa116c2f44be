"""Outages (mko.ups.outages): a cluster powered down because of a UPS, until mko has brought it back."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mko.platform.db.models.base import Base, _enum, utcnow

__all__ = ["Outage", "OutagePhase", "ScaledWorkload"]


class OutagePhase(enum.StrEnum):
    """Where an outage stands; the first three are open, the last three closed."""

    SHUTTING_DOWN = "shutting_down"  # the cluster's shutdown runs
    DOWN = "down"  # the shutdown ended: the cluster is down for power, waiting for mains
    RESTORING = "restoring"  # mains is back: the restore (wake, recovery) runs or waits for charge
    RESTORED = "restored"  # the restore ended with every node that was up before up and Ready
    RESTORE_FAILED = "restore_failed"  # the restore ran once and did not bring everything back
    CLOSED = "closed"  # closed another way (a person recovered the cluster, the cluster went away)


class Outage(Base):
    """One cluster powered down because of one UPS: which nodes were up, which mko powered off, and
    how the UPS's power cycle, mko's own host and the restore went."""

    __tablename__ = "outages"

    id: Mapped[int] = mapped_column(primary_key=True)
    ups_id: Mapped[int] = mapped_column(ForeignKey("ups.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))  # what started it: power_loss, runtime_low, …, manual
    event_id: Mapped[int | None] = mapped_column(Integer)  # the ups_events row, when an event did
    phase: Mapped[OutagePhase] = mapped_column(
        _enum(OutagePhase, "outage_phase"), default=OutagePhase.SHUTTING_DOWN, index=True
    )
    reason: Mapped[str] = mapped_column(Text, default="")  # who shut it down and why, in words
    nodes_up: Mapped[list[int]] = mapped_column(JSON, default=list)  # answered before the shutdown
    nodes_off: Mapped[list[int]] = mapped_column(JSON, default=list)  # mko confirmed them off
    shutdown_operation_id: Mapped[int | None] = mapped_column(Integer)
    restore_operation_id: Mapped[int | None] = mapped_column(Integer)  # the restore rule's execution
    power_cycle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # sent/skipped, UPS's answer
    host_shutdown: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # mko's own host, last
    summary: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(index=True)  # None while open


class ScaledWorkload(Base):
    """A Deployment or StatefulSet a shutdown scaled to zero, and the replicas the recovery gives back.

    Written (and committed) before ``kubectl scale`` runs: mko may lose power half-way through a
    shutdown, and the next recovery must still know what to restore. Deleted once restored.
    """

    __tablename__ = "scaled_workloads"

    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    namespace: Mapped[str] = mapped_column(String(253))
    kind: Mapped[str] = mapped_column(String(32))  # Deployment | StatefulSet
    name: Mapped[str] = mapped_column(String(253))
    replicas: Mapped[int] = mapped_column(Integer)
    operation_id: Mapped[int | None] = mapped_column(Integer)  # the shutdown that scaled it
    scaled_at: Mapped[datetime] = mapped_column(default=utcnow)
