"""Nodes: create, read, update, delete, with every check in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, joinedload

from mko.inventory.clusters import DESCRIPTION_MAX, _commit
from mko.inventory.dependencies import IMPLICIT_EDGE_FIELDS, refuse_cycle, set_dependencies
from mko.inventory.feeds import set_feeds
from mko.inventory.power_settings import (
    check_param_fields,
    check_power_settings,
    check_secret_destinations,
    encrypt_secrets,
    secret_fields,
)
from mko.inventory.read import NodeFilters, select_nodes
from mko.inventory.schemas import NodeCreate, NodeUpdate, WolConfigure
from mko.inventory.snapshots import param_values, stored_params
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform import validation
from mko.platform.db.models.inventory import DEFAULT_POWER_METHOD, Cluster, Node, ProxmoxHost
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.errors import InputError, NotFoundError
from mko.platform.missing import does_not_exist

__all__ = [
    "configure_wol",
    "create_node",
    "delete_node",
    "get_node",
    "list_nodes",
    "node_values",
    "update_node",
]


_FIELD_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "hostname": validation.validate_hostname,
    "ip_address": validation.validate_ipv4,
    "ssh_user": validation.validate_ssh_user,
    "ssh_port": validation.validate_port,
    "ssh_key_path": validation.validate_ssh_key_path,
    "description": lambda value, field: validation.check_text(value, field, max_length=DESCRIPTION_MAX),
    "probe_port": validation.validate_port,
    "site": validation.validate_site,
}


# Built once: building a statement cost more than running it (the SQL is cached on the object).
_NODE_WITH_CLUSTER = select(Node).options(joinedload(Node.cluster)).where(Node.id == bindparam("node_id"))


def get_node(session: Session, node_id: int, *, with_cluster: bool = False) -> Node:
    """The node with this id, or NotFoundError; ``with_cluster`` loads its cluster in the same query."""
    if with_cluster:
        node = session.scalars(_NODE_WITH_CLUSTER, {"node_id": node_id}).first()
    else:
        node = session.get(Node, node_id)
    if node is None:
        raise NotFoundError("node", node_id)
    return node


def list_nodes(session: Session, cluster_id: int | None = None) -> list[Node]:
    """Nodes by id, optionally of one cluster (which must exist), with what power snapshots read."""
    return select_nodes(session, NodeFilters(cluster_id=cluster_id))


def create_node(session: Session, data: NodeCreate) -> Node:
    """Add a node after checking every field and the WoL combination."""
    given = encrypt_secrets(session, data.model_dump(exclude_unset=True))
    depends_on = given.pop("depends_on", None)
    fed_by = given.pop("fed_by", None)
    values = _checked(session, _defaults() | given, explicit=set(given))
    node = Node()
    _write(node, values, set(values))
    session.add(node)
    with _undone_on_error(session):
        if depends_on:
            session.flush()  # the node's id, for its dependencies
            set_dependencies(session, node, depends_on)
        if fed_by:
            set_feeds(session, node, fed_by)
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
    depends_on = given.pop("depends_on", None)
    fed_by = given.pop("fed_by", None)
    changes = encrypt_secrets(session, dict(given))
    current = node_values(node)
    merged = _checked(session, current | changes, explicit=set(changes))
    check_secret_destinations(
        session, f"node {node_id} ({node.hostname})", current, merged, given, may_rebind_secrets
    )
    _write(node, merged, {k for k, v in merged.items() if k in changes or v != current.get(k)})
    with _undone_on_error(session):  # the checks below read the written node back (autoflush)
        if depends_on is not None:
            set_dependencies(session, node, depends_on)
        else:
            # A node that becomes (or stops being) a Proxmox host, or a VM that moves to another host,
            # changes what the VMs depend on without a word about depends_on: no cycle either way.
            moved = [f for f in IMPLICIT_EDGE_FIELDS if f in changes and merged.get(f) != current.get(f)]
            if moved:
                refuse_cycle(session, None, moved[0])
        if fed_by is not None:
            set_feeds(session, node, fed_by)
    _commit(session, lambda: _duplicate_message(session, merged, node_id))
    return node


def configure_wol(
    session: Session, node_id: int, data: WolConfigure, actor: Actor, *, may_rebind_secrets: bool = False
) -> tuple[Node, Operation | None]:
    """The seed's ``wol configure`` as a person asks for it (CLI, API, web alike): change the WoL fields
    sent, nothing else, and record the change as a ``wol_configure`` operation.

    The record names the fields sent, every secret (SecureOn, BMC or plug password…) as ``***``
    (``None`` when cleared), never its value. A configure that changes nothing (every value sent is
    the one stored, driver settings included) records nothing: the history shows what changed, and
    when, not every time someone pressed Save. Code that records an operation of its own (a NIC
    switch, an inventory refresh) calls ``update_node`` instead.
    """
    before = node_values(get_node(session, node_id))
    node = update_node(session, node_id, data, may_rebind_secrets=may_rebind_secrets)
    after = node_values(node)
    changed = [name for name in after if after[name] != before.get(name)]
    if not changed:
        return node, None
    parameters = data.model_dump(mode="json", exclude_unset=True)
    for secret in secret_fields().keys() & parameters.keys():
        parameters[secret] = "***" if parameters[secret] else None
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


@contextmanager
def _undone_on_error(session: Session) -> Iterator[None]:
    """Roll the session back when a check after the first write refuses the change: nothing of it
    stays, not even for a page that renders the refusal with the same session."""
    try:
        yield
    except BaseException:
        session.rollback()
        raise


def _node_columns() -> list[str]:
    return [c.key for c in Node.__table__.columns if c.key not in ("id", "created_at", "power_params")]


def node_values(node: Node) -> dict[str, Any]:
    """A node's settings by flat name: its columns and every driver setting (``power_params``)."""
    return {column: getattr(node, column) for column in _node_columns()} | param_values(node)


def _write(node: Node, values: Mapping[str, Any], changed: set[str]) -> None:
    """Set the changed columns, and ``power_params`` when a driver setting changed."""
    columns = set(_node_columns())
    for name in changed & columns:
        setattr(node, name, values[name])
    params = stored_params(values)
    if params != (node.power_params or {}):
        node.power_params = params  # a new dict: the JSON column notices only assignment


def _defaults() -> dict[str, Any]:
    return {
        "ssh_user": "ubuntu",
        "ssh_port": 22,
        "wol_enabled": False,
        "wol_method": DEFAULT_POWER_METHOD,
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
    check_param_fields(result, explicit)
    for column in Node.__table__.columns:
        if not column.nullable and column.key in result and result[column.key] is None:
            raise InputError(column.key, "must not be empty")
    for required in ("hostname", "ip_address"):
        if result.get(required) is None:
            raise InputError(required, "is required")
    if result.get("cluster_id") is not None and session.get(Cluster, result["cluster_id"]) is None:
        raise InputError("cluster_id", does_not_exist("cluster", result["cluster_id"]))
    if (
        result.get("proxmox_host_id") is not None
        and session.get(ProxmoxHost, result["proxmox_host_id"]) is None
    ):
        raise InputError("proxmox_host_id", does_not_exist("Proxmox host", result["proxmox_host_id"]))
    check_power_settings(result, explicit)
    unnamed = result.get("proxmox_host_id") is None
    if result["wol_method"] == "proxmox" and result.get("wol_enabled") and unnamed:
        # Without one, a VM is started through the only Proxmox host mko knows (snapshots._Refs):
        # with several, its start could only fail.
        hosts = session.scalar(select(func.count()).select_from(ProxmoxHost)) or 0
        if hosts > 1:
            raise InputError(
                "proxmox_host_id",
                f"mko knows {hosts} Proxmox hosts (mko proxmox list): name this VM's (--proxmox-host-id)",
            )
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
