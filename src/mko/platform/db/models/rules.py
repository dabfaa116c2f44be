"""Power rules: a UPS event on a UPS starts an action on a cluster."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mko.platform.db.models.base import Base, _enum, utcnow
from mko.platform.db.models.ups import PowerEvent

__all__ = ["ClusterAction", "PowerRule", "RuleTarget"]


class ClusterAction(enum.StrEnum):
    """What a power rule does to its cluster."""

    WAKE_ON_LAN = "wake_on_lan"
    GRACEFUL_SHUTDOWN = "graceful_shutdown"
    FORCE_SHUTDOWN = "force_shutdown"


class RuleTarget(enum.StrEnum):
    """Which nodes of its cluster a rule acts on."""

    CLUSTER = "cluster"  # the whole cluster (the seed's rules)
    FED_NODES = "fed_nodes"  # only the nodes its UPS feeds (node_feeds), and of those, the ones it concerns


class PowerRule(Base):
    """When a UPS reports ``power_event``, do ``cluster_action`` to a cluster."""

    __tablename__ = "power_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    ups_id: Mapped[int] = mapped_column(ForeignKey("ups.id", ondelete="CASCADE"), index=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    power_event: Mapped[PowerEvent] = mapped_column(_enum(PowerEvent, "power_event"))
    cluster_action: Mapped[ClusterAction] = mapped_column(_enum(ClusterAction, "cluster_action"))
    battery_threshold: Mapped[int | None] = mapped_column(Integer)
    action_delay: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    execution_count: Mapped[int] = mapped_column(Integer, default=0)
    success_count: Mapped[int] = mapped_column(Integer, default=0)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    last_triggered_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Notifications (mko.notify): which moments are sent, and apprise URLs added to the global ones.
    notify_on_trigger: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_on_completion: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_on_failure: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_urls_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet token of a JSON list
    # wake_on_lan rules: after the wake, run the recovery (microk8s start, all Ready, uncordon).
    recover_after_wake: Mapped[bool] = mapped_column(Boolean, default=True)
    # power_restored rules: act only once the charge is at least this (percent) and mains has held
    # this many seconds; a new power loss cancels the wait.
    min_charge: Mapped[int | None] = mapped_column(Integer)
    stable_for: Mapped[int] = mapped_column(Integer, default=0)
    # The whole cluster, or only the nodes of it that the rule's UPS feeds.
    target: Mapped[str] = mapped_column(
        String(16), default=RuleTarget.CLUSTER.value, server_default=RuleTarget.CLUSTER.value
    )
