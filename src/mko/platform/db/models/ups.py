"""UPSes watched over NUT and the power events seen on them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mko.platform.db.models.base import Base, _enum, utcnow

__all__ = ["UPS", "PowerEvent", "UpsEvent"]


class PowerEvent(enum.StrEnum):
    """UPS events a power rule can react to."""

    POWER_LOSS = "power_loss"
    POWER_RESTORED = "power_restored"
    LOW_BATTERY = "low_battery"
    CRITICAL_BATTERY = "critical_battery"
    UPS_SHUTDOWN = "ups_shutdown"
    COMM_LOST = "comm_lost"
    COMM_RESTORED = "comm_restored"
    # battery.runtime fell below what this cluster's last measured shutdown needs (times a factor, plus
    # a margin): "shut down while the battery can still carry the shutdown".
    RUNTIME_LOW = "runtime_low"


class UPS(Base):
    """A UPS: a device name on a NUT server."""

    __tablename__ = "ups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    ups_name: Mapped[str] = mapped_column(String(100))  # device name in upsd, e.g. "myups"
    host: Mapped[str] = mapped_column(String(253), default="127.0.0.1")
    port: Mapped[int] = mapped_column(Integer, default=3493)
    username: Mapped[str | None] = mapped_column(String(100))
    password_encrypted: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # NUT's primary role: once every node its rules shut down is confirmed off, ask the UPS to cut its
    # load and restore it when mains returns (INSTCMD shutdown.return), with the user's credentials.
    power_cycle: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (UniqueConstraint("host", "port", "ups_name", name="uq_ups_device"),)


class UpsEvent(Base):
    """A power event detected on a UPS: which, when, and the status tokens before and after."""

    __tablename__ = "ups_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    ups_id: Mapped[int] = mapped_column(ForeignKey("ups.id", ondelete="CASCADE"), index=True)
    event: Mapped[PowerEvent] = mapped_column(_enum(PowerEvent, "power_event"))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    status_before: Mapped[str | None] = mapped_column(String(100))  # ups.status as read, e.g. "OL CHRG"
    status_after: Mapped[str | None] = mapped_column(String(100))  # None when the UPS could not be read
    battery_charge: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Claimed for the rules (mko.ha): set once, atomically, by the one instance that acts on the event.
    handled_at: Mapped[datetime | None] = mapped_column()
    handled_by: Mapped[str | None] = mapped_column(String(200))


# Revision 0018: one UPS's events by time.
Index("ix_ups_events_ups_time", UpsEvent.ups_id, UpsEvent.occurred_at)
