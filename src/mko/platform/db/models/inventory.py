"""What mko manages: clusters, Proxmox hosts and nodes (with the seed's Wake-on-LAN
fields)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mko.platform.db.models.base import Base, _enum, utcnow

__all__ = ["Cluster", "Node", "NodeRole", "ProxmoxHost", "WolMethod"]


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
    # Power drivers beyond magic packets (mko.power.drivers.proxmox / ipmi / redfish).
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
    # Background reachability (mko.wol.reachability.Refresher): the last TCP probe of the probe port.
    reachable: Mapped[bool | None] = mapped_column(Boolean)  # None until first probed
    reachability_checked_at: Mapped[datetime | None] = mapped_column()
    reachability_changed_at: Mapped[datetime | None] = mapped_column()  # when it last went up or down
    # Wake agents (mko.agents): the node's broadcast domain; None inherits the cluster's, "local" = ours.
    site: Mapped[str | None] = mapped_column(String(64))

    cluster: Mapped[Cluster | None] = relationship(back_populates="nodes")
    proxmox_host: Mapped[ProxmoxHost | None] = relationship()


# Revision 0018: the node list's filters (role, state, site) and the Proxmox host's foreign key.
Index("ix_nodes_proxmox_host_id", Node.proxmox_host_id)
Index("ix_nodes_role", Node.role)
Index("ix_nodes_reachable", Node.reachable)
Index("ix_nodes_site", Node.site)
