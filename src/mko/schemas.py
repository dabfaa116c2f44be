"""Pydantic model families (Create / Update / Public) shared by the API, the CLI and the web UI.

Type checks live here; semantic checks (MAC forms, addresses, host names) live in ``mko.validation``
and run in the service layer, so every adapter gets the same rules and the same messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mko.db.models import NodeRole, OperationStatus, WolMethod

__all__ = [
    "ClusterCreate",
    "ClusterPublic",
    "ClusterUpdate",
    "NodeCreate",
    "NodePublic",
    "NodeUpdate",
    "OperationPublic",
    "OperationStepPublic",
    "WolConfigure",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterCreate(_Strict):
    """A new cluster."""

    name: str = Field(min_length=1, max_length=100)
    description: str = ""


class ClusterUpdate(_Strict):
    """Fields of a cluster to change; fields not sent stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = None


class ClusterPublic(BaseModel):
    """A cluster as shown to people."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    created_at: datetime
    node_count: int = 0


class WolConfigure(_Strict):
    """The seed's ``PUT /api/nodes/{id}/wol/configure`` body; only fields sent are changed."""

    wol_enabled: bool | None = None
    wol_mac_address: str | None = None
    wol_method: WolMethod | None = None
    wol_port: int | None = None
    wol_broadcast_address: str | None = None
    is_virtual_node: bool | None = None
    proxmox_vm_id: int | None = Field(default=None, ge=100, le=999_999_999)
    proxmox_host_id: int | None = None
    wol_interface: str | None = None
    wol_secureon: str | None = Field(default=None, description="SecureOn password; write-only")
    wol_prefix_len: int | None = Field(default=None, ge=0, le=32)
    probe_port: int | None = None


class NodeCreate(WolConfigure):
    """A new node; WoL fields are optional here and may be set later with ``wol configure``."""

    hostname: str
    ip_address: str
    ssh_user: str = "ubuntu"
    ssh_port: int = 22
    ssh_key_path: str | None = None
    role: NodeRole = NodeRole.WORKER
    cluster_id: int | None = None
    description: str = ""


class NodeUpdate(WolConfigure):
    """Fields of a node to change; fields not sent stay as they are."""

    hostname: str | None = None
    ip_address: str | None = None
    ssh_user: str | None = None
    ssh_port: int | None = None
    ssh_key_path: str | None = None
    role: NodeRole | None = None
    cluster_id: int | None = None
    description: str | None = None


class NodePublic(BaseModel):
    """A node as shown to people. The SecureOn password is reported as set or not, never shown."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    hostname: str
    ip_address: str
    ssh_user: str
    ssh_port: int
    ssh_key_path: str | None
    role: NodeRole
    cluster_id: int | None
    description: str
    created_at: datetime
    wol_enabled: bool
    wol_mac_address: str | None
    wol_method: WolMethod
    wol_port: int
    wol_broadcast_address: str | None
    is_virtual_node: bool
    proxmox_vm_id: int | None
    proxmox_host_id: int | None
    wol_interface: str | None
    wol_secureon_set: bool = False
    wol_prefix_len: int | None
    probe_port: int | None

    @classmethod
    def of(cls, node: Any) -> NodePublic:
        """Build from a Node row."""
        public = cls.model_validate(node)
        public.wol_secureon_set = node.wol_secureon is not None
        return public


class OperationStepPublic(BaseModel):
    """One step of an operation."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    node_id: int | None
    name: str
    status: OperationStatus
    message: str
    detail: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None


class OperationPublic(BaseModel):
    """An operation with its steps."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    target_type: str
    target_id: int | None
    actor: str
    source: str
    status: OperationStatus
    summary: str
    parameters: dict[str, Any]
    result: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[OperationStepPublic] = []
