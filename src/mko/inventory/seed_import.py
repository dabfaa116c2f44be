"""Bring an existing database to mko's schema with the Wake-on-LAN fields: back up, migrate, verify.

The seed's ``python scripts/migrate_wake_on_lan_fields.py`` and ``mko db migrate-wol`` run
``migrate_wol``; ``mko db upgrade`` and ``mko serve`` run ``upgrade_database``. Two kinds of database
are accepted, anything else is refused untouched:

- mko's own, at an earlier Alembic revision: upgraded through Alembic to the newest revision (0001 has
  no WoL fields, 0002 adds them with the seed's defaults).
- the earlier orchestrator's (the seed's): ``nodes`` (hostname, ip_address, ssh_user, ssh_port,
  ssh_key_path, is_control_plane, cluster_id, …) and ``clusters``, without WoL fields or mko revisions.
  All its tables are set aside (SQLite: renamed ``legacy_<name>``; PostgreSQL: moved to schema
  ``legacy``), mko's schema is created at revision 0001, clusters and nodes are copied keeping their
  ids, then Alembic upgrades to the newest revision, so the WoL defaults come from revision 0002 exactly
  as for mko's own databases. A valid MAC address from the old node's network info is carried over.

The change runs in one transaction (SQLite included: DDL joins it), is verified, and on any failure the
database is restored from the backup taken first.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic.runtime.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, Text, insert, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mko.inventory.clusters import list_clusters
from mko.inventory.nodes import get_node, list_nodes
from mko.inventory.schemas import NodePublic
from mko.platform import validation
from mko.platform.db.backup import backup_sqlite, is_sqlite, safe_url, sqlite_path
from mko.platform.db.models.base import Base, UTCDateTime
from mko.platform.db.models.inventory import DEFAULT_POWER_METHOD, NodeRole
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import (
    LEGACY_NODE_COLUMNS,
    LEGACY_PREFIX,
    LEGACY_SCHEMA,
    PRE_WOL_REVISION,
    STEPS,
    DatabaseKind,
    DatabaseState,
    MigrationReport,
    _alembic,
    _before_wol,
    _count,
    _head,
    _inject,
    _is_sqlite_connection,
    _locked,
    _no_progress,
    _q,
    _read_only,
    _reason,
    _recover,
    _set_aside,
    _VerifyError,
    backup_first,
    inspect_database,
)
from mko.platform.errors import BackupError, InputError, MigrationFailedError, MigrationRefusedError

if TYPE_CHECKING:
    from mko.platform.db.upgrade import Progress

__all__ = ["migrate_wol"]

log = logging.getLogger("mko.db.legacy")


WOL_FIELDS = (
    "wol_enabled",
    "wol_mac_address",
    "wol_method",
    "wol_port",
    "wol_broadcast_address",
    "is_virtual_node",
    "proxmox_vm_id",
    "proxmox_host_id",
)


# Where the earlier orchestrator kept a node's MAC address: a column, or JSON network info.
MAC_COLUMNS = ("wol_mac_address", "mac_address", "mac")
NETWORK_INFO_COLUMNS = ("network_info", "network", "nic_info")
_MAC_KEYS = ("mac", "mac_address", "macaddress", "hwaddr", "hw_address", "ether")
_IP_KEYS = ("ip", "ip_address", "ipv4", "address", "addresses")


_MAX_PROBLEMS = 10


@dataclass
class _Plan:
    state: DatabaseState
    target: str
    counts: dict[str, int] = field(default_factory=dict)  # rows each table must still have afterwards
    clusters: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    macs: dict[int, str] = field(default_factory=dict)
    defaulted: set[int] = field(default_factory=set)  # node ids that must carry the seed's WoL defaults
    report: MigrationReport | None = None


def _plan(url: str, state: DatabaseState) -> _Plan:
    plan = _Plan(state=state, target=_head())
    with _read_only(url) as connection:
        if state.kind is DatabaseKind.MKO:
            for table in state.tables:
                if table != "alembic_version":
                    plan.counts[table] = _count(connection, table)
            if state.revision is not None and _before_wol(state.revision):
                ids = connection.execute(text("SELECT id FROM nodes"))
                plan.defaulted = {int(row[0]) for row in ids}
        else:
            _plan_import(connection, plan)
    return plan


class _Problems(list[str]):
    def check(self, label: str, check: Callable[[Any, str], Any], value: Any, name: str) -> Any:
        try:
            return check(value, name)
        except InputError as exc:
            self.append(f"{label}: {exc}")
            return None


def _plan_import(connection: Connection, plan: _Plan) -> None:
    """Map the earlier orchestrator's clusters and nodes to mko's columns; refuse what cannot be kept."""
    report = plan.report = MigrationReport(database="", kind=DatabaseKind.LEGACY.value)
    problems = _Problems()
    tables = plan.state.tables
    sqlite = _is_sqlite_connection(connection)
    if sqlite:
        clashes = [t for t in tables if f"{LEGACY_PREFIX}{t}" in tables]
        if clashes:
            problems.append(f"tables {', '.join(LEGACY_PREFIX + t for t in clashes)} already exist")
    elif LEGACY_SCHEMA in inspect(connection).get_schema_names():
        problems.append(f"a schema named {LEGACY_SCHEMA!r} already exists")
    _plan_clusters(_rows(connection, "clusters"), plan, problems)
    node_rows = _rows(connection, "nodes")
    _plan_nodes(node_rows, plan, problems, report)
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise MigrationRefusedError(
            "the earlier orchestrator's database cannot be imported as it is: "
            + "; ".join(shown)
            + more
            + ". Nothing was changed; correct these rows in the old database and run again"
        )
    unused = sorted(set(node_rows[0]) - _IMPORTED_NODE_COLUMNS) if node_rows else []
    if unused:
        report.notes.append(f"columns of the earlier nodes table not imported: {', '.join(unused)}")
    plan.counts = {"clusters": len(plan.clusters), "nodes": len(plan.nodes)}
    report.kept_tables = [f"{LEGACY_PREFIX}{t}" if sqlite else f"{LEGACY_SCHEMA}.{t}" for t in tables]


_IMPORTED_NODE_COLUMNS = {
    *LEGACY_NODE_COLUMNS,
    "description",
    "notes",
    "created_at",
    *MAC_COLUMNS,
    *NETWORK_INFO_COLUMNS,
}


def _rows(connection: Connection, table: str) -> list[dict[str, Any]]:
    query = text(f"SELECT * FROM {_q(table)} ORDER BY id")  # noqa: S608 - a fixed, quoted table name
    return [dict(row) for row in connection.execute(query).mappings()]


def _plan_clusters(rows: list[dict[str, Any]], plan: _Plan, problems: _Problems) -> None:
    names: dict[str, int] = {}
    for row in rows:
        label = f"cluster {row['id']}"
        name = str(row["name"] or "").strip()
        if not name:
            problems.append(f"{label}: has no name")
        elif name in names:
            problems.append(f"{label}: name {name!r} is also cluster {names[name]}'s")
        names.setdefault(name, row["id"])
        plan.clusters.append(
            {
                "id": _int(row["id"]),
                "name": name,
                "description": str(row.get("description") or ""),
                "created_at": _timestamp(row.get("created_at")),
            }
        )


def _plan_nodes(
    rows: list[dict[str, Any]], plan: _Plan, problems: _Problems, report: MigrationReport
) -> None:
    cluster_ids = {c["id"] for c in plan.clusters}
    hostnames: dict[str, int] = {}
    macs: dict[str, int] = {}
    without_user = 0
    for row in rows:
        node = _node_values(row, problems)
        label = f"node {node['id']} ({row['hostname']!r})"
        hostname = node["hostname"]
        if hostname is not None and hostname in hostnames:
            problems.append(f"{label}: hostname {hostname!r} is also node {hostnames[hostname]}'s")
        elif hostname is not None:
            hostnames[hostname] = node["id"]
        if node["cluster_id"] is not None and node["cluster_id"] not in cluster_ids:
            report.notes.append(
                f"{label} belonged to cluster {node['cluster_id']}, which does not exist:"
                " imported without a cluster"
            )
            node["cluster_id"] = None
        without_user += not row["ssh_user"]
        plan.nodes.append(node)
        plan.defaulted.add(node["id"])
        mac, trouble = _mac_of(row, node["ip_address"])
        if mac is not None and mac in macs:
            trouble = f"MAC {mac} is also node {macs[mac]}'s"
        if trouble:
            report.macs_not_imported.append(f"{label}: {trouble}")
        elif mac is not None:
            macs[mac] = node["id"]
            plan.macs[node["id"]] = mac
    if without_user:
        report.notes.append(f"{without_user} node(s) without an SSH user get 'ubuntu'")


def _node_values(row: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    """One old node as revision 0001's columns; what cannot be kept goes to ``problems``."""
    node_id = _int(row["id"])
    label = f"node {node_id} ({row['hostname']!r})"
    ssh_user = str(row["ssh_user"] or "ubuntu")
    problems.check(label, validation.validate_ssh_user, ssh_user, "ssh_user")
    key_path = str(row["ssh_key_path"]).strip() if row["ssh_key_path"] else None
    if key_path is not None and len(key_path) > 500:
        problems.append(f"{label}: ssh_key_path is longer than 500 characters")
    control_plane = _flag(row["is_control_plane"])
    if control_plane is None:
        problems.append(f"{label}: is_control_plane {row['is_control_plane']!r} is neither true nor false")
    return {
        "id": node_id,
        "hostname": problems.check(
            label, validation.validate_hostname, str(row["hostname"] or ""), "hostname"
        ),
        "ip_address": problems.check(
            label, validation.validate_ipv4, str(row["ip_address"] or ""), "ip_address"
        ),
        "ssh_user": ssh_user,
        "ssh_port": problems.check(label, _port, row["ssh_port"], "ssh_port"),
        "ssh_key_path": key_path,
        "role": NodeRole.CONTROL_PLANE.value if control_plane else NodeRole.WORKER.value,
        "cluster_id": problems.check(label, _optional_id, row["cluster_id"], "cluster_id"),
        "description": str(row.get("description") or row.get("notes") or ""),
        "created_at": _timestamp(row.get("created_at")),
    }


def _int(value: Any, name: str = "id") -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise InputError(name, f"{value!r} is not a whole number") from None


def _port(value: Any, name: str) -> int:
    """An SSH port; missing means 22, as the earlier orchestrator assumed."""
    return 22 if value in (None, "") else validation.validate_port(_int(value, name), name)


def _optional_id(value: Any, name: str) -> int | None:
    return None if value in (None, "") else _int(value, name)


def _flag(value: Any) -> bool | None:
    """The earlier orchestrator's booleans: SQLite 0/1, PostgreSQL booleans, or text."""
    if value is None:
        return False
    if isinstance(value, bool | int):
        return bool(value)
    word = str(value).strip().lower()
    if word in {"1", "true", "t", "yes", "y", "on"}:
        return True
    if word in {"0", "false", "f", "no", "n", "off", ""}:
        return False
    return None


def _timestamp(value: Any) -> datetime:
    """A stored creation time, read as UTC when it carries no zone; unreadable or missing: now."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return datetime.now(UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _mac_of(row: Mapping[str, Any], ip: str | None) -> tuple[str | None, str | None]:
    """(the valid MAC address the old row knows, normalised; or why it is not imported)."""
    raw, trouble = _raw_mac(row, ip)
    if raw is None:
        return None, trouble
    try:
        return validation.normalize_mac(raw), None
    except InputError as exc:
        return None, exc.message


def _raw_mac(row: Mapping[str, Any], ip: str | None) -> tuple[str | None, str | None]:
    for column in MAC_COLUMNS:
        if row.get(column) not in (None, ""):
            return str(row[column]), None
    for column in NETWORK_INFO_COLUMNS:
        info = row.get(column)
        if info in (None, ""):
            continue
        if isinstance(info, str):
            try:
                info = json.loads(info)
            except ValueError:
                return None, f"{column} is not JSON"
        if not isinstance(info, dict):
            return None, f"{column} is not a JSON object"
        return _mac_in(info, ip, column)
    return None, None


def _mac_in(info: dict[str, Any], ip: str | None, column: str) -> tuple[str | None, str | None]:
    """The MAC in network info: top level, else the interface with the node's address, else the only one."""
    top = next((str(info[key]) for key in _MAC_KEYS if info.get(key)), None)
    if top is not None:
        return top, None
    interfaces = info.get("interfaces")
    if isinstance(interfaces, dict):  # {"eno1": {...}, ...}
        interfaces = [{"name": k, **v} for k, v in interfaces.items() if isinstance(v, dict)]
    found: list[tuple[str, bool]] = []
    for interface in interfaces if isinstance(interfaces, list) else []:
        if not isinstance(interface, dict):
            continue
        mac = next((str(interface[k]) for k in _MAC_KEYS if interface.get(k)), None)
        if mac is None:
            continue
        values = [interface.get(k) for k in _IP_KEYS]
        addresses = {str(a).split("/")[0] for v in values for a in (v if isinstance(v, list) else [v]) if a}
        found.append((mac, ip is not None and ip in addresses))
    matching = [mac for mac, has_ip in found if has_ip]
    if matching or len(found) == 1:
        return (matching or [found[0][0]])[0], None
    if found:
        return None, f"{len(found)} interfaces in {column} and none carries the node's address"
    return None, None


# The shape of clusters and nodes at revision 0001, to insert the imported rows before 0002 adds the
# WoL fields (the models describe the newest revision and would add WoL defaults to the INSERT).
_V1 = MetaData()
_V1_CLUSTERS = Table(
    "clusters",
    _V1,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100)),
    Column("description", Text),
    Column("created_at", UTCDateTime()),
)
_V1_NODES = Table(
    "nodes",
    _V1,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("hostname", String(253)),
    Column("ip_address", String(45)),
    Column("ssh_user", String(32)),
    Column("ssh_port", Integer),
    Column("ssh_key_path", String(500)),
    Column("role", String(32)),
    Column("cluster_id", Integer),
    Column("description", Text),
    Column("created_at", UTCDateTime()),
)


def _apply(connection: Connection, plan: _Plan, *, fail_after: str | None, progress: Progress) -> None:
    """Bring the schema to the WoL fields, set the defaults and check the result, in the open transaction."""
    if plan.state.kind is DatabaseKind.LEGACY:
        _set_aside(connection, plan.state.tables)
        _alembic(connection, PRE_WOL_REVISION)
        if plan.clusters:
            connection.execute(insert(_V1_CLUSTERS), plan.clusters)
        if plan.nodes:
            connection.execute(insert(_V1_NODES), plan.nodes)
        _alembic(connection, "head")
        if connection.dialect.name == "postgresql":
            for table in ("clusters", "nodes"):  # ids were given: move the sequences past them
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608 - fixed names
                    f" COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
        progress(
            "schema",
            f"imported {len(plan.clusters)} cluster(s) and {len(plan.nodes)} node(s) into mko's"
            f" schema at revision {plan.target} (Alembic: {PRE_WOL_REVISION} → {plan.target})",
        )
    else:
        _alembic(connection, "head")
        progress("schema", f"Alembic upgrade {plan.state.revision} → {plan.target}")
    _inject(fail_after, "schema")
    for node_id, mac in plan.macs.items():
        connection.execute(
            text("UPDATE nodes SET wol_mac_address = :mac WHERE id = :id"), {"mac": mac, "id": node_id}
        )
    progress("defaults", _defaults_message(plan))
    _inject(fail_after, "defaults")
    _verify(connection, plan)


def _defaults_message(plan: _Plan) -> str:
    if not plan.defaulted:
        return "no node predates the Wake-on-LAN fields: nothing to default"
    message = f"{len(plan.defaulted)} node(s): Wake-on-LAN disabled, method ethernet, port 9, physical"
    if plan.state.kind is DatabaseKind.LEGACY:
        message += f"; {len(plan.macs)} MAC address(es) carried over"
    return message


def _verify(connection: Connection, plan: _Plan) -> None:
    """Every column present, row counts kept, every node readable through the service layer."""
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision != plan.target:
        raise _VerifyError(f"the database is at revision {revision}, expected {plan.target}")
    insp = inspect(connection)
    for table in Base.metadata.sorted_tables:
        present = {c["name"] for c in insp.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in present]
        if missing:
            raise _VerifyError(f"table {table.name} lacks the column(s) {', '.join(missing)}")
    for name, expected in plan.counts.items():
        actual = _count(connection, name)
        if actual != expected:
            raise _VerifyError(f"table {name} has {actual} row(s) where it had {expected}")
    expected_nodes = {row["id"]: row for row in plan.nodes}
    session = Session(bind=connection)
    try:
        nodes = list_nodes(session)
        for node in nodes:
            try:
                public = NodePublic.of(get_node(session, node.id))
            except ValidationError as exc:
                raise _VerifyError(f"node {node.id} cannot be read: {exc.errors()[0]['msg']}") from exc
            if node.id in plan.defaulted:
                _check_defaults(public, plan.macs.get(node.id))
            if node.id in expected_nodes:
                _check_imported(public, expected_nodes[node.id])
        if plan.nodes and len(nodes) != len(plan.nodes):
            raise _VerifyError(f"{len(nodes)} node(s) readable, {len(plan.nodes)} imported")
        if plan.clusters and len(list_clusters(session)) != len(plan.clusters):
            raise _VerifyError("not every imported cluster is readable")
    finally:
        session.close()


def _check_defaults(node: NodePublic, mac: str | None) -> None:
    got = (node.wol_enabled, node.wol_method, node.wol_port, node.is_virtual_node, node.wol_mac_address)
    want = (False, DEFAULT_POWER_METHOD, 9, False, mac)
    if got != want:
        raise _VerifyError(f"node {node.id} has WoL settings {got}, expected the defaults {want}")


def _check_imported(node: NodePublic, row: Mapping[str, Any]) -> None:
    for name in (
        "hostname",
        "ip_address",
        "ssh_user",
        "ssh_port",
        "ssh_key_path",
        "cluster_id",
        "description",
    ):
        if getattr(node, name) != row[name]:
            raise _VerifyError(f"node {node.id}: {name} is {getattr(node, name)!r}, expected {row[name]!r}")
    if node.role.value != row["role"]:
        raise _VerifyError(f"node {node.id}: role is {node.role.value!r}, expected {row['role']!r}")


def _verify_on_disk(url: str, plan: _Plan) -> None:
    """Check again after the commit, through mko's own engine, as ``mko serve`` will see it."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _verify(connection, plan)
    finally:
        engine.dispose()


def migrate_wol(
    url: str,
    *,
    dry_run: bool = False,
    backup: bool = True,
    backup_dir: Path | None = None,
    fail_after: str | None = None,
    progress: Progress = _no_progress,
) -> MigrationReport:
    """The seed's migration: back up, bring the schema to the WoL fields, set defaults, verify."""
    if fail_after is not None and fail_after not in STEPS:
        raise InputError("fail_after", f"must be one of {', '.join(STEPS)}")
    state = inspect_database(url)
    head = _head()
    report = MigrationReport(database=safe_url(url), kind=state.kind.value, dry_run=dry_run)
    if state.kind in (DatabaseKind.FOREIGN, DatabaseKind.NEWER):
        raise MigrationRefusedError(state.reason)
    if state.kind is DatabaseKind.EMPTY:
        report.message = "the database is empty: nothing to migrate (`mko db upgrade` creates mko's schema)"
        return report
    if state.kind is DatabaseKind.MKO and state.revision == head:
        report.from_revision = report.to_revision = head
        report.message = f"nothing to do: the database is already at revision {head}, with the WoL fields"
        return report
    if dry_run:
        plan = _plan(url, state)
        _fill_report(report, plan)
        progress("found", _describe(state, report))
        _trial(url, plan)
        report.message = f"dry run: migrating to revision {head} would succeed and verify; nothing changed"
        return report

    backup_path: Path | None = None
    changing = False
    try:
        with _locked(url, state.tables) as connection:
            # Planned and backed up under the lock: nothing written meanwhile is missed or lost.
            if inspect_database(url) != state:
                raise MigrationRefusedError("the database changed while mko was reading it; run again")
            plan = _plan(url, state)
            _fill_report(report, plan)
            progress("found", _describe(state, report))
            if backup:
                backup_path = backup_first(url, backup_dir)
                report.backup = str(backup_path)
                progress("backup", str(backup_path))
            else:
                progress("backup", "skipped (--no-backup)")
            changing = True
            _inject(fail_after, "backup")
            _apply(connection, plan, fail_after=fail_after, progress=progress)
        _inject(fail_after, "commit")
        _verify_on_disk(url, plan)
    except BaseException as exc:
        if not changing:
            raise  # refused before anything was written (the transaction was rolled back)
        _recover(url, backup_path, exc)
        raise  # _recover raised for ordinary errors; this re-raises other exits after the restore
    report.changed = True
    progress(
        "verify",
        f"ok: every column present, {report.clusters} cluster(s) and {report.nodes} node(s) before and"
        " after, every node readable",
    )
    report.message = f"migrated to revision {head}"
    log.info("migrated %s (%s) to %s; backup %s", report.database, state.kind.value, head, backup_path)
    return report


def _fill_report(report: MigrationReport, plan: _Plan) -> None:
    if plan.state.kind is DatabaseKind.MKO:
        # (The earlier orchestrator's own revision ids mean nothing to mko: left out.)
        report.from_revision = plan.state.revision
    if plan.report is not None:  # an import: carry what planning found
        report.macs_not_imported = plan.report.macs_not_imported
        report.notes = plan.report.notes
        report.kept_tables = plan.report.kept_tables
    report.to_revision = plan.target
    report.clusters = plan.counts.get("clusters", 0)
    report.nodes = plan.counts.get("nodes", 0)
    report.nodes_defaulted = len(plan.defaulted)
    report.macs_carried_over = len(plan.macs)


def _describe(state: DatabaseState, report: MigrationReport) -> str:
    if state.kind is DatabaseKind.LEGACY:
        return f"the earlier orchestrator's database ({report.clusters} cluster(s), {report.nodes} node(s))"
    return f"an mko database at revision {state.revision} ({report.nodes} node(s))"


def _trial(url: str, plan: _Plan) -> None:
    """Run the whole migration where it changes nothing: a scratch copy, or a transaction rolled back."""
    try:
        if is_sqlite(url):
            with tempfile.TemporaryDirectory(prefix="mko-dry-run-") as scratch:
                copy = Path(scratch) / "trial.db"
                backup_sqlite(sqlite_path(url), copy)
                trial_url = f"sqlite:///{copy}"
                with _locked(trial_url, plan.state.tables) as connection:
                    _apply(connection, plan, fail_after=None, progress=_no_progress)
                _verify_on_disk(trial_url, plan)
        else:
            with _locked(url, plan.state.tables, commit=False) as connection:
                _apply(connection, plan, fail_after=None, progress=_no_progress)
    except (SQLAlchemyError, _VerifyError, MigrationFailedError, BackupError) as exc:
        raise MigrationFailedError(
            f"dry run: the migration would fail: {_reason(exc)}; nothing was changed"
        ) from exc
