"""Pydantic families of UPSes, their events and power rules (shared by the API, the CLI and the web)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from mko.platform.db.models.rules import ClusterAction
from mko.platform.db.models.ups import PowerEvent
from mko.platform.validation import InputModel

__all__ = [
    "OutagePublic",
    "RuleCreate",
    "RulePublic",
    "UpsCreate",
    "UpsEventPublic",
    "UpsPublic",
]


class UpsCreate(InputModel):
    """A UPS: the device name on a NUT server (``upsname@host:port`` in NUT's own notation)."""

    name: str = Field(min_length=1, max_length=100, description="mko's name for this UPS")
    ups_name: str = Field(min_length=1, max_length=100, description="the device name in upsd, e.g. myups")
    host: str = Field(default="127.0.0.1", description="host name or address of upsd")
    port: int = Field(default=3493, description="upsd's TCP port")
    username: str | None = Field(default=None, description="upsd user (upsd.users), optional")
    password: SecretStr | None = Field(default=None, description="upsd password; write-only")
    description: str = ""
    power_cycle: bool = Field(
        default=False,
        description="at the end of a shutdown for this UPS, once every node is confirmed off, have it"
        " cut and restore its load (INSTCMD shutdown.return; needs username/password with instcmds)",
    )


class UpsPublic(BaseModel):
    """A UPS as shown to people; the password is reported as set or not, never shown."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    ups_name: str
    host: str
    port: int
    username: str | None
    password_set: bool = False
    description: str
    power_cycle: bool
    created_at: datetime
    device: str = ""

    @classmethod
    def of(cls, ups: Any) -> UpsPublic:
        """Build from a UPS row."""
        public = cls.model_validate(ups)
        public.password_set = ups.password_encrypted is not None
        host = f"[{ups.host}]" if ":" in ups.host else ups.host
        public.device = f"{ups.ups_name}@{host}:{ups.port}"
        return public


class UpsEventPublic(BaseModel):
    """One stored power event."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    ups_id: int
    event: PowerEvent
    occurred_at: datetime
    status_before: str | None
    status_after: str | None
    battery_charge: float | None
    message: str
    detail: dict[str, Any]


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
    execution_count: int
    success_count: int
    failure_count: int
    last_triggered_at: datetime | None
    created_at: datetime


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
