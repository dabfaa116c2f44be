"""What the power layer gets of a node: a :class:`~mko.power.base.NodeSnapshot` with its driver's
settings model, built here so that drivers never see a row or a session.

:func:`snapshots` reads every Proxmox host the nodes refer to in one query (plus the single-host
fallback), then builds each snapshot without touching the database again. A node of a composite driver
(a ``proxmox_host`` powered on by its BMC) also gets its ``delegate``: the same node with the method it
is powered through and that driver's settings model, so that the driver needs no other driver's code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session, object_session

from mko.platform.db.models.inventory import Cluster, Node, ProxmoxHost
from mko.power.base import LOCAL_SITE, NodeSnapshot, ProxmoxEndpoint
from mko.power.params import DriverParams, EncryptedSecret, stored_value
from mko.power.registry import DRIVERS

__all__ = [
    "bare_snapshot",
    "endpoint_of",
    "node_from_row",
    "node_rows",
    "node_rows_query",
    "node_site",
    "param_values",
    "snapshot",
    "snapshots",
    "stored_params",
]


def node_site(node: Node) -> str | None:
    """Where the node's magic packets must start: its own site, else its cluster's; None for ours."""
    site = node.site or (node.cluster.site if node.cluster is not None else None)
    return None if site in (None, LOCAL_SITE) else site


def endpoint_of(row: ProxmoxHost) -> ProxmoxEndpoint:
    """A ProxmoxHost row as the driver sees it (the secret still encrypted)."""
    return ProxmoxEndpoint(
        host_id=row.id,
        name=row.name,
        host=row.host,
        port=row.port,
        token_id=row.token_id,
        username=row.username,
        secret_encrypted=row.secret_encrypted,
        verify_tls=row.verify_tls,
        ca_file=row.ca_file,
        fingerprint=row.fingerprint,
    )


@cache  # the registry is fixed at import; walking every driver's model cost more than a status read
def _column_fields() -> tuple[str, ...]:
    return tuple(name for name, (_info, meta) in DRIVERS.all_params_fields().items() if meta.column)


def param_values(node: Node, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """The node's driver settings by flat name: the seed's columns and ``power_params`` together,
    secrets as :class:`EncryptedSecret` (``columns``: :func:`_column_fields`, when the caller has it)."""
    values: dict[str, Any] = {}
    for name, stored in (node.power_params or {}).items():
        secret = isinstance(stored, dict) and "fernet" in stored
        values[name] = EncryptedSecret(stored["fernet"]) if secret else stored
    for name in _column_fields() if columns is None else columns:
        values[name] = getattr(node, name)
    return values


def stored_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """What ``power_params`` stores of a node's flat settings: every non-empty value that is not a column."""
    columns = set(_column_fields())
    fields = DRIVERS.all_params_fields()
    stored: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields or name in columns or value is None:
            continue
        if isinstance(value, bool) and value == fields[name][0].default:
            continue  # a default (bmc_verify_tls true) is what an absent key means
        stored[name] = stored_value(value)
    return stored


def params_of(node: Node, columns: Sequence[str] | None = None) -> DriverParams:
    """The node's settings as its driver's model (values already checked when they were stored)."""
    return DRIVERS.params(node.wol_method).model_validate(param_values(node, columns))


def _delegate(built: NodeSnapshot) -> NodeSnapshot | None:
    """The node as the driver it is powered through sees it, for a composite driver's node; else None
    (and None while that method is not set, or names no driver the composite accepts)."""
    chosen = built.params.delegate()
    if chosen is None:
        return None
    method, params = chosen
    return dataclasses.replace(built, method=method, params=params, delegate=None)


class _Refs:
    """Proxmox hosts by id, read once for many nodes; the only host when there is just one."""

    def __init__(self, session: Session | None, nodes: Sequence[Node]) -> None:
        self.hosts: dict[int, ProxmoxEndpoint] = {}
        self.only: ProxmoxEndpoint | None = None
        wanted = {n.proxmox_host_id for n in nodes if n.proxmox_host_id is not None}
        needs_fallback = any(n.wol_method == "proxmox" and n.proxmox_host_id is None for n in nodes)
        if session is None:
            return
        if wanted:
            rows = session.scalars(select(ProxmoxHost).where(ProxmoxHost.id.in_(wanted))).all()
            self.hosts = {row.id: endpoint_of(row) for row in rows}
        if needs_fallback:
            rows = session.scalars(select(ProxmoxHost).limit(2)).all()
            self.only = endpoint_of(rows[0]) if len(rows) == 1 else None

    def of(self, node: Node) -> dict[str, Any]:
        host = self.hosts.get(node.proxmox_host_id) if node.proxmox_host_id is not None else self.only
        return {} if host is None else {"proxmox_host": host}


def _build(node: Node, refs: _Refs, columns: Sequence[str]) -> NodeSnapshot:
    built = NodeSnapshot(
        node_id=node.id,
        hostname=node.hostname,
        ip_address=node.ip_address,
        role=node.role.value,
        method=node.wol_method,
        probe_port=node.probe_port or node.ssh_port,
        site=node_site(node),
        params=params_of(node, columns),
        refs=refs.of(node),
    )
    delegate = _delegate(built)
    return built if delegate is None else dataclasses.replace(built, delegate=delegate)


#: What a wake reads of a node besides its driver's column settings (``power_params`` holds the rest).
_ROW_COLUMNS = (
    "id",
    "hostname",
    "ip_address",
    "role",
    "wol_method",
    "wol_enabled",
    "probe_port",
    "ssh_port",
    "site",
    "cluster_id",
    "proxmox_host_id",
    "power_params",
)


def node_rows_query(*extra: InstrumentedAttribute[Any]) -> Select[Any]:
    """The node columns :func:`snapshots` and a wake's checks read, ``extra`` node columns, and the
    cluster's site last (as ``cluster_site``): read the rows with :func:`node_from_row`."""
    names = dict.fromkeys((*_ROW_COLUMNS, *_column_fields(), *(column.key for column in extra)))
    return select(*(getattr(Node, name) for name in names), Cluster.site.label("cluster_site")).outerjoin(
        Cluster, Cluster.id == Node.cluster_id
    )


def node_from_row(row: Any, keys: Sequence[str]) -> Any:
    """A row of :func:`node_rows_query` (its first ``keys``) as an object with a node's attributes and
    ``cluster.site``: what :func:`snapshots` and a wake's checks read, with no ORM object behind it."""
    values = dict(zip(keys, row, strict=False))
    return SimpleNamespace(**values, cluster=SimpleNamespace(site=row.cluster_site))


def node_rows(session: Session, *, cluster_id: int) -> list[Any]:
    """The nodes of a cluster by id, as one core query reads them (no ORM objects): each row has the
    attributes :func:`snapshots` and a wake's checks read, and ``cluster.site``.

    For a wake of 10,000 nodes: loading them as ORM objects with their relationships took longer than
    sending every packet.
    """
    result = session.execute(node_rows_query().where(Node.cluster_id == cluster_id).order_by(Node.id))
    keys = list(result.keys())[:-1]  # the last is cluster_site
    return [node_from_row(row, keys) for row in result]


def snapshots(session: Session | None, nodes: Sequence[Node]) -> list[NodeSnapshot]:
    """Snapshots of many nodes: one query for the Proxmox hosts they refer to, then pure building."""
    if session is None and nodes:
        session = object_session(nodes[0])
    refs = _Refs(session, nodes)
    columns = _column_fields()  # once: it walks every driver's settings model
    return [_build(node, refs, columns) for node in nodes]


def bare_snapshot(node: Node) -> NodeSnapshot:
    """A node's snapshot without what it refers to (no Proxmox endpoint, no query): for reads that show
    its settings, never for a power action."""
    return _build(node, _Refs(None, ()), _column_fields())


def snapshot(node: Node) -> NodeSnapshot:
    """The snapshot of one node (its session resolves its Proxmox host)."""
    [built] = snapshots(object_session(node), [node])
    return built
