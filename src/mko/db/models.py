"""Typed SQLAlchemy 2 models. Migrations in ``mko/db/migrations`` must match these exactly."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "UPS",
    "Base",
    "Cluster",
    "ClusterAction",
    "Node",
    "NodeRole",
    "Operation",
    "OperationStatus",
    "OperationStep",
    "PowerEvent",
    "PowerRule",
    "ProxmoxHost",
    "Schedule",
    "ScheduleAction",
    "UpsEvent",
    "WolMethod",
    "utcnow",
]


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


class NodeRole(enum.StrEnum):
    """A node's MicroK8s role; control-plane nodes go down last and come up first."""

    CONTROL_PLANE = "control-plane"
    WORKER = "worker"


class WolMethod(enum.StrEnum):
    """How a node is powered on. Grows with the power drivers."""

    ETHERNET = "ethernet"  # magic packet in a UDP datagram to a broadcast address (the seed's default)
    ETHERNET_RAW = "ethernet-raw"  # raw Ethernet frame, EtherType 0x0842, on a named interface (etherwake)
    PROXMOX = "proxmox"
    IPMI = "ipmi"
    REDFISH = "redfish"


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


class ClusterAction(enum.StrEnum):
    """What a power rule does to its cluster."""

    WAKE_ON_LAN = "wake_on_lan"
    GRACEFUL_SHUTDOWN = "graceful_shutdown"
    FORCE_SHUTDOWN = "force_shutdown"


class ScheduleAction(enum.StrEnum):
    """What a schedule does at its times."""

    WAKE = "wake"
    SHUTDOWN = "shutdown"  # of a cluster, through the graceful path (refused until that exists)


class OperationStatus(enum.StrEnum):
    """Life cycle of an operation and of each of its steps."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as the value strings in a VARCHAR, so new members need no ALTER TYPE on PostgreSQL.
    return Enum(cls, name=name, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store in UTC."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read back as UTC-aware."""
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every mko table."""

    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Cluster(Base):
    """A MicroK8s cluster."""

    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Wake agents (mko.agents): the broadcast domain of the cluster's nodes; None = the orchestrator's own.
    site: Mapped[str | None] = mapped_column(String(64))

    nodes: Mapped[list[Node]] = relationship(back_populates="cluster", order_by="Node.id")


class ProxmoxHost(Base):
    """A Proxmox VE API endpoint that starts and stops virtual nodes."""

    __tablename__ = "proxmox_hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer, default=8006)
    token_id: Mapped[str | None] = mapped_column(String(200))  # user@realm!tokenname
    username: Mapped[str | None] = mapped_column(String(100))  # user@realm, when no token is used
    secret_encrypted: Mapped[str | None] = mapped_column(Text)  # token secret or password, never returned
    verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    ca_file: Mapped[str | None] = mapped_column(String(500))
    fingerprint: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Node(Base):
    """A machine (physical or virtual) in a cluster, with everything needed to power it."""

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253), unique=True)
    ip_address: Mapped[str] = mapped_column(String(45))
    ssh_user: Mapped[str] = mapped_column(String(32), default="ubuntu")
    ssh_port: Mapped[int] = mapped_column(Integer, default=22)
    ssh_key_path: Mapped[str | None] = mapped_column(String(500))
    role: Mapped[NodeRole] = mapped_column(_enum(NodeRole, "node_role"), default=NodeRole.WORKER)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="RESTRICT"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Wake-on-LAN: the seed's fields.
    wol_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    wol_mac_address: Mapped[str | None] = mapped_column(String(17), unique=True)
    wol_method: Mapped[WolMethod] = mapped_column(_enum(WolMethod, "wol_method"), default=WolMethod.ETHERNET)
    wol_port: Mapped[int] = mapped_column(Integer, default=9)
    wol_broadcast_address: Mapped[str | None] = mapped_column(String(45))
    is_virtual_node: Mapped[bool] = mapped_column(Boolean, default=False)
    proxmox_vm_id: Mapped[int | None] = mapped_column(Integer)
    proxmox_host_id: Mapped[int | None] = mapped_column(ForeignKey("proxmox_hosts.id", ondelete="SET NULL"))
    # Wake-on-LAN: what mko adds.
    wol_interface: Mapped[str | None] = mapped_column(String(15))  # orchestrator-side source interface
    wol_secureon_encrypted: Mapped[str | None] = mapped_column(Text)  # SecureOn password (Fernet token)
    wol_prefix_len: Mapped[int | None] = mapped_column(Integer)  # node subnet prefix, for its broadcast
    probe_port: Mapped[int | None] = mapped_column(Integer)  # TCP port that proves "up"; default ssh_port
    cordoned_by_mko: Mapped[bool] = mapped_column(Boolean, default=False)  # drained by a shutdown of ours
    # Power drivers beyond magic packets (mko.power.proxmox / ipmi / redfish).
    proxmox_node: Mapped[str | None] = mapped_column(String(100))  # PVE node name; found when empty
    bmc_address: Mapped[str | None] = mapped_column(String(253))  # IPMI BMC host name or address
    bmc_port: Mapped[int | None] = mapped_column(Integer)  # IPMI UDP port; default 623
    bmc_username: Mapped[str | None] = mapped_column(String(100))  # IPMI and Redfish user
    bmc_password_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet token, never returned
    redfish_url: Mapped[str | None] = mapped_column(String(500))  # e.g. https://10.0.0.5
    redfish_system_id: Mapped[str | None] = mapped_column(String(200))  # default: the BMC's only system
    bmc_verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    bmc_ca_file: Mapped[str | None] = mapped_column(String(500))
    # The node's own network card, as read over SSH (collect-mac, wol enable/disable, Ansible facts).
    nic_interface: Mapped[str | None] = mapped_column(String(15))  # node-side interface of wol_mac_address
    nic_interfaces: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # every interface found
    nic_collected_at: Mapped[datetime | None] = mapped_column()
    nic_wol_supported: Mapped[str | None] = mapped_column(String(16))  # "Supports Wake-on", e.g. pumbg
    nic_wol_state: Mapped[str | None] = mapped_column(String(16))  # ethtool "Wake-on", e.g. g or d
    nic_wol_persistence: Mapped[str | None] = mapped_column(String(32))  # how the setting survives a reboot
    nic_checked_at: Mapped[datetime | None] = mapped_column()
    # Background reachability (mko.reachability.Refresher): the last TCP probe of the probe port.
    reachable: Mapped[bool | None] = mapped_column(Boolean)  # None until first probed
    reachability_checked_at: Mapped[datetime | None] = mapped_column()
    reachability_changed_at: Mapped[datetime | None] = mapped_column()  # when it last went up or down
    # Wake agents (mko.agents): the node's broadcast domain; None inherits the cluster's, "local" = ours.
    site: Mapped[str | None] = mapped_column(String(64))

    cluster: Mapped[Cluster | None] = relationship(back_populates="nodes")
    proxmox_host: Mapped[ProxmoxHost | None] = relationship()


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


class Operation(Base):
    """One action (wake, shutdown, configure, rule execution) with who asked, its steps and result."""

    __tablename__ = "operations"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    target_type: Mapped[str] = mapped_column(String(20))
    target_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[OperationStatus] = mapped_column(
        _enum(OperationStatus, "operation_status"), default=OperationStatus.PENDING, index=True
    )
    summary: Mapped[str] = mapped_column(Text, default="")
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # The serve instance running it (mko.ha): a new leader resumes or fails those of dead instances.
    instance: Mapped[str | None] = mapped_column(String(200), index=True)
    # The process running it (mko.ownership): closed as interrupted only once that process is gone.
    owner_host: Mapped[str | None] = mapped_column(String(253))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    owner_start: Mapped[str | None] = mapped_column(String(100))  # "<start ticks>@<boot id>/<pid ns>"
    heartbeat_at: Mapped[datetime | None] = mapped_column()  # refreshed while it is open

    steps: Mapped[list[OperationStep]] = relationship(
        back_populates="operation", order_by="OperationStep.seq", cascade="all, delete-orphan"
    )


class OperationStep(Base):
    """One step of an operation, usually one action on one node."""

    __tablename__ = "operation_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[OperationStatus] = mapped_column(
        _enum(OperationStatus, "operation_status"), default=OperationStatus.PENDING
    )
    message: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    operation: Mapped[Operation] = relationship(back_populates="steps")
