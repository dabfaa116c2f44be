"""Pydantic model families (Create / Update / Public) shared by the API, the CLI and the web UI.

Type checks live here; semantic checks (MAC forms, addresses, host names) live in ``mko.platform.validation``
and run in the service layer, so every adapter gets the same rules and the same messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model

from mko.platform.db.models.inventory import NodeRole
from mko.platform.validation import InputModel
from mko.power.registry import DRIVERS, PowerMethod

__all__ = [
    "ClusterCreate",
    "ClusterPublic",
    "ClusterUpdate",
    "NodeCreate",
    "NodePublic",
    "NodeUpdate",
    "ProxmoxHostCreate",
    "ProxmoxHostPublic",
    "ProxmoxHostUpdate",
    "WolConfigure",
]


SITE_HELP = "wake-agent site of the nodes (letters, digits, . _ -)"
STAGGER_HELP = "seconds between two nodes' power-ons in a wake of the cluster (inrush current)"


class ClusterCreate(InputModel):
    """A new cluster."""

    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=1000)
    site: str | None = Field(default=None, description=SITE_HELP)
    power_stagger: float | None = Field(default=None, ge=0, le=600, description=STAGGER_HELP)


class ClusterUpdate(InputModel):
    """Fields of a cluster to change; fields not sent stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    site: str | None = Field(default=None, description=SITE_HELP + "; null: the orchestrator's LAN")
    power_stagger: float | None = Field(default=None, ge=0, le=600, description=STAGGER_HELP + "; null: none")


class ClusterPublic(BaseModel):
    """A cluster as shown to people."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    created_at: datetime
    node_count: int = 0
    site: str | None = None
    power_stagger: float | None = None


class _SeedWolFields(InputModel):
    """The seed's ``PUT /api/nodes/{id}/wol/configure`` body; only fields sent are changed."""

    wol_enabled: bool | None = None
    wol_mac_address: str | None = None
    wol_method: PowerMethod | None = None
    wol_port: int | None = None
    wol_broadcast_address: str | None = None
    is_virtual_node: bool | None = None
    proxmox_vm_id: int | None = Field(default=None, ge=100, le=999_999_999)
    proxmox_host_id: int | None = None
    probe_port: int | None = None
    site: str | None = Field(
        default=None,
        description="wake-agent site sending this node's magic packets; null: the cluster's; 'local': ours",
    )


def _driver_fields(*, public: bool) -> dict[str, Any]:
    """Every driver setting the seed's fields do not already name, from the drivers' models: optional
    in requests (secrets write-only), shown in responses (secrets as ``<name>_set``)."""
    fields: dict[str, Any] = {}
    for name, (info, meta) in DRIVERS.all_params_fields().items():
        if meta.column:
            continue
        if meta.secret:
            if public:
                fields[f"{name}_set"] = (bool, Field(default=False, description=f"{meta.help} is set"))
            else:
                fields[name] = (SecretStr | None, Field(default=None, description=f"{meta.help}; write-only"))
            continue
        annotation = info.annotation
        if public:
            fields[name] = (annotation, Field(default=info.default, description=meta.help))
        elif "list[" in str(annotation):
            # An argument vector may also come as one line of words (CLI, web form); the driver's check
            # splits it.
            fields[name] = (Optional[annotation | str], Field(default=None, description=meta.help))  # noqa: UP045
        else:
            fields[name] = (Optional[annotation], Field(default=None, description=meta.help))  # noqa: UP045
    return fields


if TYPE_CHECKING:

    class WolConfigure(_SeedWolFields):
        """The type checker's view: driver settings are given and read by name."""

        def __init__(self, **data: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

else:
    #: The seed's body plus every driver's settings (mko.power.params): a new driver adds its own here.
    WolConfigure = create_model(
        "WolConfigure",
        __base__=_SeedWolFields,
        __doc__="The seed's ``PUT /api/nodes/{id}/wol/configure`` body; only fields sent are changed.",
        **_driver_fields(public=False),
    )


DEPENDS_HELP = "ids of the nodes this node needs up before it is powered on (a NAS, its Proxmox host)"


class NodeCreate(WolConfigure):
    """A new node; WoL fields are optional here and may be set later with ``wol configure``."""

    depends_on: list[int] | None = Field(default=None, description=DEPENDS_HELP)

    hostname: str
    ip_address: str
    ssh_user: str = "ubuntu"
    ssh_port: int = 22
    ssh_key_path: str | None = Field(
        default=None, description="absolute path of the private key on mko's machine (docs/security.md)"
    )
    role: NodeRole = NodeRole.WORKER
    cluster_id: int | None = None
    description: str = Field(default="", max_length=1000)


class NodeUpdate(WolConfigure):
    """Fields of a node to change; fields not sent stay as they are."""

    depends_on: list[int] | None = Field(default=None, description=DEPENDS_HELP + "; [] clears")

    hostname: str | None = None
    ip_address: str | None = None
    ssh_user: str | None = None
    ssh_port: int | None = None
    ssh_key_path: str | None = None
    role: NodeRole | None = None
    cluster_id: int | None = None
    description: str | None = Field(default=None, max_length=1000)


class _NodePublicBase(BaseModel):
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
    wol_method: str
    power_method: str = Field(
        default="", description="the node's power driver (the seed calls it wol_method)"
    )
    wol_port: int
    wol_broadcast_address: str | None
    is_virtual_node: bool
    proxmox_vm_id: int | None
    proxmox_host_id: int | None
    probe_port: int | None
    depends_on: list[int] = Field(default_factory=list, description=DEPENDS_HELP)
    # Read from the node itself over SSH (collect-mac, wol enable/disable, Ansible facts); None until then.
    nic_interface: str | None = None
    nic_wol_supported: str | None = Field(default=None, description='ethtool "Supports Wake-on", e.g. pumbg')
    nic_wol_state: str | None = Field(default=None, description='ethtool "Wake-on": g magic packet, d off')
    nic_wol_persistence: str | None = Field(
        default=None, description="NetworkManager, systemd-networkd, systemd-unit or none"
    )
    nic_checked_at: datetime | None = None
    nic_collected_at: datetime | None = None
    nic_interfaces: list[dict[str, Any]] | None = None
    site: str | None = None
    wake_site: str | None = Field(
        default=None, description="the site whose agents wake it (its own or its cluster's); null: ours"
    )

    @classmethod
    def of(cls, node: Any) -> Self:
        """Build from a Node row: its columns, and its driver settings with secrets as ``…_set``."""
        from mko.inventory.snapshots import node_site, param_values

        data: dict[str, Any] = {c.key: getattr(node, c.key) for c in node.__table__.columns}
        data.pop("power_params", None)
        for name, value in param_values(node).items():
            if name in cls.model_fields:
                data[name] = value
            elif f"{name}_set" in cls.model_fields:
                data[f"{name}_set"] = value is not None
        data["power_method"] = node.wol_method
        data["depends_on"] = sorted(d.depends_on_id for d in node.dependencies)
        data["wake_site"] = node_site(node)
        return cls.model_validate(data)


if TYPE_CHECKING:

    class NodePublic(_NodePublicBase):
        """The type checker's view: driver settings are given and read by name."""

        def __init__(self, **data: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

else:
    #: A node as shown to people, with every driver's settings (secrets only as ``<name>_set``).
    NodePublic = create_model(
        "NodePublic",
        __base__=_NodePublicBase,
        __doc__="A node as shown to people. Secrets are reported as set or not, never shown.",
        **_driver_fields(public=True),
    )


class ProxmoxHostCreate(InputModel):
    """A Proxmox VE API endpoint: an API token (``token_id`` + ``secret``) or a user and password."""

    name: str = Field(min_length=1, max_length=100)
    host: str = Field(description="host name or address of any node of the Proxmox cluster")
    port: int = 8006
    token_id: str | None = Field(default=None, description="API token id: user@realm!tokenname")
    username: str | None = Field(default=None, description="user@realm, when no token is used")
    secret: SecretStr = Field(description="the token's secret, or the user's password; write-only")
    verify_tls: bool = True
    ca_file: str | None = Field(default=None, description="CA (or the self-signed certificate) to trust")
    fingerprint: str | None = Field(default=None, description="SHA-256 fingerprint of the certificate to pin")


class ProxmoxHostUpdate(InputModel):
    """Fields of a Proxmox host to change; fields not sent stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    host: str | None = None
    port: int | None = None
    token_id: str | None = None
    username: str | None = None
    secret: SecretStr | None = None
    verify_tls: bool | None = None
    ca_file: str | None = None
    fingerprint: str | None = None


class ProxmoxHostPublic(BaseModel):
    """A Proxmox host as shown to people: the secret is reported as set, never shown."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    host: str
    port: int
    auth: str = "token"
    token_id: str | None
    username: str | None
    secret_set: bool = False
    verify_tls: bool
    ca_file: str | None
    fingerprint: str | None
    created_at: datetime
    node_count: int = 0

    @classmethod
    def of(cls, host: Any, node_count: int = 0) -> ProxmoxHostPublic:
        """Build from a ProxmoxHost row."""
        public = cls.model_validate(host)
        public.auth = "token" if host.token_id else "password"
        public.secret_set = host.secret_encrypted is not None
        public.node_count = node_count
        return public
