"""A power rule as created and as shown to people."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mko.platform.db.models.rules import ClusterAction, RuleTarget
from mko.platform.db.models.ups import PowerEvent
from mko.platform.validation import InputModel

__all__ = ["RuleCreate", "RulePublic"]


class RuleCreate(InputModel):
    """The seed's ``ups create-rule``: when ``power_event`` happens on a UPS, do ``cluster_action``."""

    ups_id: int
    cluster_id: int
    power_event: PowerEvent
    cluster_action: ClusterAction
    name: str | None = Field(default=None, max_length=200, description="default: '<event> → <action>'")
    battery_threshold: int | None = Field(
        default=None, description="low_battery only: charge in percent (1-100) below which the rule fires"
    )
    action_delay: int = Field(
        default=0, description="seconds to wait before acting; the opposite event cancels (0-86400)"
    )
    priority: int = Field(default=100, description="lower runs first among rules of one event (0-10000)")
    enabled: bool = True
    recover_after_wake: bool = Field(
        default=True,
        description="wake_on_lan: after the wake, microk8s start on every node, wait until all are Ready,"
        " uncordon what mko drained",
    )
    min_charge: int | None = Field(
        default=None,
        description="power_restored only: act once battery.charge is at least this (1-100 %); a new power"
        " loss cancels the wait; default: no wait for charge",
    )
    stable_for: int | None = Field(
        default=None,
        description="power_restored only: act once mains has held this many seconds (0-86400); a new power"
        " loss cancels the wait; default 10 for power_restored rules",
    )
    target: RuleTarget = Field(
        default=RuleTarget.CLUSTER,
        description="cluster: the whole cluster (unless another UPS still carries every node of it);"
        " fed_nodes: only the cluster's nodes this UPS feeds (node fed_by) and, for a shutdown, of those"
        " only the ones with no other feed on mains",
    )


class RulePublic(BaseModel):
    """A power rule with its counters."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    ups_id: int
    cluster_id: int
    power_event: PowerEvent
    cluster_action: ClusterAction
    battery_threshold: int | None
    action_delay: int
    priority: int
    enabled: bool
    recover_after_wake: bool
    min_charge: int | None
    stable_for: int
    target: RuleTarget = RuleTarget.CLUSTER
    execution_count: int
    success_count: int
    failure_count: int
    last_triggered_at: datetime | None
    created_at: datetime
