"""Nodes: create, read, update, delete, with every check in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.inventory.clusters import DESCRIPTION_MAX, _commit
from mko.inventory.power_settings import _check_power_method, _check_secret_destinations, _encrypt_secrets
from mko.inventory.read import NodeFilters, select_nodes
from mko.inventory.schemas import NodeCreate, NodeUpdate, WolConfigure
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform import validation
from mko.platform.db.models.inventory import Cluster, Node, ProxmoxHost, WolMethod
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.errors import InputError, NotFoundError
from mko.power.fields import NODE_FIELD_CHECKS

__all__ = ["configure_wol", "create_node", "delete_node", "get_node", "list_nodes", "update_node"]


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


def get_node(session: Session, node_id: int) -> Node:
    """The node with this id, or NotFoundError."""
    node = session.get(Node, node_id)
    if node is None:
        raise NotFoundError("node", node_id)
    return node


def list_nodes(session: Session, cluster_id: int | None = None) -> list[Node]:
    """Nodes by id, optionally of one cluster (which must exist), with what power snapshots read."""
    return select_nodes(session, NodeFilters(cluster_id=cluster_id))


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
    session: Session, node_id: int, data: WolConfigure, actor: Actor, *, may_rebind_secrets: bool = False
) -> tuple[Node, Operation | None]:
    """The seed's ``wol configure`` as a person asks for it (CLI, API, web alike): change the WoL fields
    sent, nothing else, and record the change as a ``wol_configure`` operation.

    The record names the fields sent, the SecureOn password as ``***`` (``None`` when cleared), never
    its value. A configure that changes nothing (every value sent is the one stored) records nothing:
    the history shows what changed, and when, not every time someone pressed Save. Code that records
    an operation of its own (a NIC switch, an inventory refresh) calls ``update_node`` instead.
    """
    columns = _node_columns()
    node = get_node(session, node_id)
    before = {column: getattr(node, column) for column in columns}
    node = update_node(session, node_id, data, may_rebind_secrets=may_rebind_secrets)
    changed = [column for column in columns if getattr(node, column) != before[column]]
    if not changed:
        return node, None
    parameters = data.model_dump(mode="json", exclude_unset=True)
    if "wol_secureon" in parameters:
        parameters["wol_secureon"] = "***" if parameters["wol_secureon"] else None
    operation = start_operation(
        session,
        kind="wol_configure",
        target_type="node",
        target_id=node_id,
        actor=actor,
        parameters=parameters,
    )
    finish_operation(
        session, operation, status=OperationStatus.SUCCEEDED, summary=f"changed {', '.join(changed)}"
    )
    return node, operation


def delete_node(session: Session, node_id: int) -> None:
    """Remove a node; its operation history stays."""
    node = get_node(session, node_id)
    session.delete(node)
    _commit(session, "node is still referenced")


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
        raise InputError(
            "cluster_id",
            f"cluster {result['cluster_id']} does not exist: add one with `mko cluster add NAME`"
            " (ids: `mko cluster list`)",
        )
    if (
        result.get("proxmox_host_id") is not None
        and session.get(ProxmoxHost, result["proxmox_host_id"]) is None
    ):
        raise InputError(
            "proxmox_host_id",
            f"Proxmox host {result['proxmox_host_id']} does not exist: add one with `mko proxmox add NAME"
            " --host ADDRESS --token-id USER@REALM!TOKEN --secret -` (ids: `mko proxmox list`)",
        )
    _check_power_method(result, explicit)
    return result


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
