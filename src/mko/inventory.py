"""Clusters and nodes: create, read, update, delete, with every check in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from mko.platform import validation
from mko.platform.db.models.inventory import Cluster, Node, ProxmoxHost, WolMethod
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.secrets import SecretBox, check_secret_destination
from mko.power.base import LOCAL_SITE
from mko.power.fields import NODE_FIELD_CHECKS, check_driver_settings, validate_secret
from mko.power.magic import LIMITED_BROADCAST, subnet_broadcast
from mko.schemas import ClusterCreate, ClusterUpdate, NodeCreate, NodeUpdate, WolConfigure

__all__ = [
    "BUILT_METHODS",
    "configure_wol",
    "create_cluster",
    "create_node",
    "delete_cluster",
    "delete_node",
    "get_cluster",
    "get_node",
    "list_clusters",
    "list_nodes",
    "node_counts",
    "update_cluster",
    "update_node",
]

# Power methods whose driver exists in this version; the others are refused at configure time
# rather than accepted and failing at 3 a.m. when the power comes back.
BUILT_METHODS = frozenset(
    {WolMethod.ETHERNET, WolMethod.ETHERNET_RAW, WolMethod.PROXMOX, WolMethod.IPMI, WolMethod.REDFISH}
)
MAGIC_PACKET_METHODS = frozenset({WolMethod.ETHERNET, WolMethod.ETHERNET_RAW})
DESCRIPTION_MAX = 1000

_FIELD_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "hostname": validation.validate_hostname,
    "ip_address": validation.validate_ipv4,
    "ssh_user": validation.validate_ssh_user,
    "ssh_port": validation.validate_port,
    "ssh_key_path": validation.validate_ssh_key_path,
    "description": lambda value, field: validation.check_text(value, field, max_length=DESCRIPTION_MAX),
    "wol_mac_address": validation.normalize_mac,
    "wol_port": validation.validate_port,
    "wol_broadcast_address": validation.validate_broadcast,
    "wol_interface": validation.validate_interface,
    "probe_port": validation.validate_port,
    "bmc_port": validation.validate_port,
    "site": validation.validate_site,
    **NODE_FIELD_CHECKS,
}


# ---------------------------------------------------------------- clusters


def create_cluster(session: Session, data: ClusterCreate) -> Cluster:
    """Add a cluster; names are unique."""
    name = _cluster_name(data.name)
    site = _cluster_site(data.site)
    description = validation.check_text(data.description, "description", max_length=DESCRIPTION_MAX)
    cluster = Cluster(name=name, description=description, site=site)
    session.add(cluster)
    _commit(session, f"a cluster named {name!r} already exists")
    return cluster


def _cluster_name(value: str | None) -> str:
    name = validation.check_text(value or "", "name", max_length=100).strip(" ")
    if not name:
        raise InputError("name", "must not be empty")
    return name


def _cluster_site(value: str | None) -> str | None:
    # "local" on a cluster is the same as no site; on a node it overrides the cluster's site.
    site = None if value is None else validation.validate_site(value)
    return None if site == "local" else site


def get_cluster(session: Session, cluster_id: int) -> Cluster:
    """The cluster with this id, or NotFoundError."""
    cluster = session.get(Cluster, cluster_id)
    if cluster is None:
        raise NotFoundError("cluster", cluster_id)
    return cluster


def list_clusters(session: Session) -> list[Cluster]:
    """All clusters by id."""
    return list(session.scalars(select(Cluster).order_by(Cluster.id)))


def node_counts(session: Session) -> dict[int, int]:
    """Number of nodes per cluster id."""
    rows = session.execute(
        select(Node.cluster_id, func.count(Node.id))
        .where(Node.cluster_id.is_not(None))
        .group_by(Node.cluster_id)
    )
    return {cluster_id: count for cluster_id, count in rows if cluster_id is not None}


def update_cluster(
    session: Session, cluster_id: int, data: ClusterUpdate, *, may_rebind_secrets: bool = False
) -> Cluster:
    """Change the fields sent.

    A new site hands the SecureOn passwords of the nodes that follow the cluster's site to that site's
    wake agents: unless ``may_rebind_secrets`` (an admin), that is refused while such nodes hold one.
    """
    cluster = get_cluster(session, cluster_id)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes:
        cluster.name = _cluster_name(changes["name"])
    if changes.get("description") is not None:
        cluster.description = validation.check_text(
            changes["description"], "description", max_length=DESCRIPTION_MAX
        )
    if "site" in changes:
        site = _cluster_site(changes["site"])
        if site != cluster.site and not may_rebind_secrets:
            _refuse_moving_secureon(session, cluster, site)
        cluster.site = site
    _commit(session, f"a cluster named {cluster.name!r} already exists")
    return cluster


def _refuse_moving_secureon(session: Session, cluster: Cluster, site: str | None) -> None:
    holders = session.scalars(
        select(Node)
        .where(Node.cluster_id == cluster.id, Node.site.is_(None), Node.wol_secureon_encrypted.is_not(None))
        .order_by(Node.id)
    ).all()
    if holders:
        names = ", ".join(f"{n.id} ({n.hostname})" for n in holders)
        raise InputError(
            "site",
            f"moving cluster {cluster.id} to site {site or 'local'} would send the stored SecureOn"
            f" password of node(s) {names} to that site's wake agents: give each of them its own site"
            " together with its SecureOn password (wol_secureon) first, or have an admin make the change",
        )


def delete_cluster(session: Session, cluster_id: int) -> None:
    """Remove an empty cluster; one with nodes is a conflict."""
    cluster = get_cluster(session, cluster_id)
    count = node_counts(session).get(cluster_id, 0)
    if count:
        raise ConflictError(f"cluster {cluster_id} still has {count} node(s); remove or move them first")
    session.delete(cluster)
    _commit(session, "cluster is still referenced")


# ---------------------------------------------------------------- nodes


def get_node(session: Session, node_id: int) -> Node:
    """The node with this id, or NotFoundError."""
    node = session.get(Node, node_id)
    if node is None:
        raise NotFoundError("node", node_id)
    return node


def list_nodes(session: Session, cluster_id: int | None = None) -> list[Node]:
    """Nodes by id, optionally of one cluster (which must exist), with what power snapshots read."""
    # NodeSnapshot.of reads the node's Proxmox host and cluster: loaded here, not one query per node.
    query = (
        select(Node).options(selectinload(Node.proxmox_host), selectinload(Node.cluster)).order_by(Node.id)
    )
    if cluster_id is not None:
        get_cluster(session, cluster_id)
        query = query.where(Node.cluster_id == cluster_id)
    return list(session.scalars(query))


def create_node(session: Session, data: NodeCreate) -> Node:
    """Add a node after checking every field and the WoL combination."""
    given = _encrypt_secrets(session, data.model_dump(exclude_unset=True))
    values = _checked(session, _defaults() | given, explicit=set(given))
    node = Node(**values)
    session.add(node)
    _commit(session, lambda: _duplicate_message(session, values, None))
    return node


def update_node(
    session: Session,
    node_id: int,
    data: NodeUpdate | WolConfigure,
    *,
    may_rebind_secrets: bool = False,
) -> Node:
    """Change only the fields sent; the merged node is checked as a whole before anything is written.

    A change that would send a stored secret (BMC password, SecureOn password) somewhere else needs
    that secret again in the same request, unless ``may_rebind_secrets`` (an admin) says otherwise.
    """
    node = get_node(session, node_id)
    given = data.model_dump(exclude_unset=True)
    changes = _encrypt_secrets(session, dict(given))
    current = {column: getattr(node, column) for column in _node_columns()}
    merged = _checked(session, current | changes, explicit=set(changes))
    _check_secret_destinations(
        session, f"node {node_id} ({node.hostname})", current, merged, given, may_rebind_secrets
    )
    for column, value in merged.items():
        if column in changes or value != current[column]:
            setattr(node, column, value)
    _commit(session, lambda: _duplicate_message(session, merged, node_id))
    return node


def configure_wol(
    session: Session, node_id: int, data: WolConfigure, *, may_rebind_secrets: bool = False
) -> Node:
    """The seed's ``wol configure``: change the WoL fields sent, nothing else."""
    return update_node(session, node_id, data, may_rebind_secrets=may_rebind_secrets)


def delete_node(session: Session, node_id: int) -> None:
    """Remove a node; its operation history stays."""
    node = get_node(session, node_id)
    session.delete(node)
    _commit(session, "node is still referenced")


# ---------------------------------------------------------------- checks


def _encrypt_secrets(session: Session, changes: dict[str, Any]) -> dict[str, Any]:
    """Replace a plain ``bmc_password`` or ``wol_secureon`` by its ciphertext column; null clears it."""
    for field, check in (("bmc_password", validate_secret), ("wol_secureon", validation.normalize_secureon)):
        if field not in changes:
            continue
        secret = changes.pop(field)
        if secret is None:
            changes[f"{field}_encrypted"] = None
            continue
        plain = check(secret.get_secret_value() if isinstance(secret, SecretStr) else secret, field)
        changes[f"{field}_encrypted"] = SecretBox.for_session(session).encrypt(plain)
    return changes


# Where a node's stored secrets are sent: the BMC password to the BMC (by method), the SecureOn
# password in every magic packet, to the broadcast address, or to the wake agents of the node's site.
_BMC_DESTINATION = {
    WolMethod.IPMI: ("wol_method", "bmc_address", "bmc_port"),
    WolMethod.REDFISH: ("wol_method", "redfish_url", "bmc_verify_tls", "bmc_ca_file"),
}
_SECUREON_FIELDS = (
    "wol_method", "site", "cluster_id", "wol_broadcast_address", "wol_prefix_len", "ip_address",
)  # fmt: skip


def _bmc_destination(values: Mapping[str, Any]) -> dict[str, Any] | None:
    fields = _BMC_DESTINATION.get(WolMethod(values["wol_method"]))
    return None if fields is None else {field: values.get(field) for field in fields}


def _secureon_destination(session: Session, values: Mapping[str, Any]) -> dict[str, Any] | None:
    if WolMethod(values["wol_method"]) not in MAGIC_PACKET_METHODS:
        return None
    site = values.get("site")
    if site is None and values.get("cluster_id") is not None:
        cluster = session.get(Cluster, values["cluster_id"])
        site = cluster.site if cluster is not None else None
    if values.get("wol_broadcast_address"):
        address = values["wol_broadcast_address"]
    elif values.get("wol_prefix_len") is not None:
        address = subnet_broadcast(values["ip_address"], values["wol_prefix_len"])
    else:
        address = LIMITED_BROADCAST
    return {"site": None if site == LOCAL_SITE else site, "address": address}


def _check_secret_destinations(
    session: Session,
    what: str,
    current: Mapping[str, Any],
    merged: Mapping[str, Any],
    given: Mapping[str, Any],
    may_rebind: bool,
) -> None:
    check_secret_destination(
        what,
        "BMC password",
        "bmc_password",
        _bmc_destination(current),
        _bmc_destination(merged),
        reused=merged.get("bmc_password_encrypted") is not None and given.get("bmc_password") is None,
        may_rebind=may_rebind,
    )
    check_secret_destination(
        what,
        "SecureOn password",
        "wol_secureon",
        _secureon_destination(session, current),
        _secureon_destination(session, merged),
        reused=merged.get("wol_secureon_encrypted") is not None and given.get("wol_secureon") is None,
        may_rebind=may_rebind,
        fields=[f for f in _SECUREON_FIELDS if f in given and merged.get(f) != current.get(f)],
    )


def _node_columns() -> list[str]:
    return [c.key for c in Node.__table__.columns if c.key not in ("id", "created_at")]


def _defaults() -> dict[str, Any]:
    return {
        "ssh_user": "ubuntu",
        "ssh_port": 22,
        "wol_enabled": False,
        "wol_method": WolMethod.ETHERNET,
        "wol_port": 9,
        "is_virtual_node": False,
        "description": "",
    }


def _checked(session: Session, values: Mapping[str, Any], explicit: set[str]) -> dict[str, Any]:
    """Normalise each field given explicitly, then check the whole combination."""
    result = dict(values)
    for field, check in _FIELD_CHECKS.items():
        value = result.get(field)
        if value is not None and field in explicit:
            result[field] = check(value, field)
    for column in Node.__table__.columns:
        if not column.nullable and column.key in result and result[column.key] is None:
            raise InputError(column.key, "must not be empty")
    for required in ("hostname", "ip_address"):
        if result.get(required) is None:
            raise InputError(required, "is required")
    if result.get("cluster_id") is not None and session.get(Cluster, result["cluster_id"]) is None:
        raise InputError("cluster_id", f"cluster {result['cluster_id']} does not exist")
    if (
        result.get("proxmox_host_id") is not None
        and session.get(ProxmoxHost, result["proxmox_host_id"]) is None
    ):
        raise InputError("proxmox_host_id", f"Proxmox host {result['proxmox_host_id']} does not exist")
    _check_power_method(result, explicit)
    return result


def _check_power_method(values: dict[str, Any], explicit: set[str]) -> None:
    """Make physical/virtual and the method agree, and reject what could only fail at wake time."""
    method = WolMethod(values["wol_method"])
    if "wol_method" not in explicit and "is_virtual_node" in explicit:
        # `--virtual` alone means "started through Proxmox"; `--physical` alone means magic packets.
        if values["is_virtual_node"] and method in MAGIC_PACKET_METHODS:
            method = WolMethod.PROXMOX
        elif not values["is_virtual_node"] and method == WolMethod.PROXMOX:
            method = WolMethod.ETHERNET
    if method not in BUILT_METHODS:
        raise InputError(
            "wol_method", f"power method {method.value!r} is not available in this version of mko"
        )
    if method == WolMethod.PROXMOX:
        if "is_virtual_node" in explicit and not values["is_virtual_node"]:
            raise InputError("is_virtual_node", "method 'proxmox' starts virtual machines only")
        values["is_virtual_node"] = True
    elif values.get("is_virtual_node"):
        field = "wol_method" if "wol_method" in explicit else "is_virtual_node"
        raise InputError(field, f"a virtual node is started through Proxmox, not by {method.value}")
    values["wol_method"] = method
    if method == WolMethod.PROXMOX:
        if values.get("wol_enabled") and values.get("proxmox_vm_id") is None:
            raise InputError("proxmox_vm_id", "a virtual node needs its Proxmox VM id to be woken")
        return
    if method in (WolMethod.IPMI, WolMethod.REDFISH):
        check_driver_settings(method, values)
        return
    if method == WolMethod.ETHERNET_RAW and not values.get("wol_interface"):
        raise InputError("wol_interface", "raw Ethernet magic packets need the interface to send them on")
    if values.get("wol_enabled") and not values.get("wol_mac_address"):
        raise InputError("wol_mac_address", "Wake-on-LAN cannot be enabled without the node's MAC address")


def _duplicate_message(session: Session, values: Mapping[str, Any], node_id: int | None) -> str:
    """Say which unique field clashed, and with which node."""
    for field in ("hostname", "wol_mac_address"):
        value = values.get(field)
        if value is None:
            continue
        other = session.scalars(
            select(Node).where(getattr(Node, field) == value, Node.id != (node_id or -1))
        ).first()
        if other is not None:
            return f"{field} {value!r} is already used by node {other.id} ({other.hostname})"
    return "the node clashes with an existing one"


def _commit(session: Session, conflict_message: str | Callable[[], str]) -> None:
    """Commit, or roll back completely and report a duplicate as a conflict."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        message = conflict_message if isinstance(conflict_message, str) else conflict_message()
        raise ConflictError(message) from None
    except BaseException:
        session.rollback()
        raise
