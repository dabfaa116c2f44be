"""What mko manages: clusters, Proxmox hosts and nodes (with the seed's Wake-on-LAN
fields)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship, synonym

from mko.platform.db.models.base import Base, _enum, utcnow

__all__ = ["DEFAULT_POWER_METHOD", "Cluster", "Node", "NodeDependency", "NodeRole", "ProxmoxHost"]


class NodeRole(enum.StrEnum):
    """A node's MicroK8s role; control-plane nodes go down last and come up first."""

    CONTROL_PLANE = "control-plane"
    WORKER = "worker"


#: The seed's default method: a magic packet in a UDP datagram to a broadcast address.
DEFAULT_POWER_METHOD = "ethernet"


class Cluster(Base):
    """A MicroK8s cluster."""

    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Wake agents (mko.agents): the broadcast domain of the cluster's nodes; None = the orchestrator's own.
    site: Mapped[str | None] = mapped_column(String(64))
    # Kubernetes-aware shutdown and recovery (mko.cluster.options.K8sOptions): only the fields set here.
    k8s: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Seconds between two nodes' power-ons in a wake of this cluster (inrush current); None: no stagger.
    power_stagger: Mapped[float | None] = mapped_column(Float)

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
    # The power method: a name in mko.power.registry.DRIVERS (the seed calls it wol_method).
    wol_method: Mapped[str] = mapped_column(String(32), default=DEFAULT_POWER_METHOD)
    wol_port: Mapped[int] = mapped_column(Integer, default=9)
    wol_broadcast_address: Mapped[str | None] = mapped_column(String(45))
    is_virtual_node: Mapped[bool] = mapped_column(Boolean, default=False)
    proxmox_vm_id: Mapped[int | None] = mapped_column(Integer)
    proxmox_host_id: Mapped[int | None] = mapped_column(ForeignKey("proxmox_hosts.id", ondelete="SET NULL"))
    # Every other setting of the node's power drivers, by its flat name (mko.power.params); secrets as
    # {"fernet": token}. The values of other methods stay, so switching back keeps them.
    power_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    probe_port: Mapped[int | None] = mapped_column(Integer)  # TCP port that proves "up"; default ssh_port
    cordoned_by_mko: Mapped[bool] = mapped_column(Boolean, default=False)  # drained by a shutdown of ours
    # The node's own network card, as read over SSH (collect-mac, wol enable/disable, Ansible facts).
    nic_interface: Mapped[str | None] = mapped_column(String(15))  # node-side interface of wol_mac_address
    nic_interfaces: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # every interface found
    nic_collected_at: Mapped[datetime | None] = mapped_column()
    nic_wol_supported: Mapped[str | None] = mapped_column(String(16))  # "Supports Wake-on", e.g. pumbg
    nic_wol_state: Mapped[str | None] = mapped_column(String(16))  # ethtool "Wake-on", e.g. g or d
    nic_wol_persistence: Mapped[str | None] = mapped_column(String(32))  # how the setting survives a reboot
    nic_checked_at: Mapped[datetime | None] = mapped_column()
    # Background reachability (mko.wol.reachability.Refresher): the last TCP probe of the probe port.
    reachable: Mapped[bool | None] = mapped_column(Boolean)  # None until first probed
    reachability_checked_at: Mapped[datetime | None] = mapped_column()
    reachability_changed_at: Mapped[datetime | None] = mapped_column()  # when it last went up or down
    # Wake agents (mko.agents): the node's broadcast domain; None inherits the cluster's, "local" = ours.
    site: Mapped[str | None] = mapped_column(String(64))

    cluster: Mapped[Cluster | None] = relationship(back_populates="nodes")
    proxmox_host: Mapped[ProxmoxHost | None] = relationship()
    # What this node waits for when powered on (and goes down before); see NodeDependency.
    dependencies: Mapped[list[NodeDependency]] = relationship(
        foreign_keys="NodeDependency.node_id",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
    )
    power_method = synonym("wol_method")


class NodeDependency(Base):
    """``node_id`` may be powered on only after ``depends_on_id`` is up (a NAS before the workers that
    mount it); shutdowns go the other way."""

    __tablename__ = "node_dependencies"

    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    depends_on_id: Mapped[int] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True, index=True
    )


# Revision 0018: the node list's filters (role, state, site) and the Proxmox host's foreign key.
Index("ix_nodes_proxmox_host_id", Node.proxmox_host_id)
Index("ix_nodes_role", Node.role)
Index("ix_nodes_reachable", Node.reachable)
Index("ix_nodes_site", Node.site)
