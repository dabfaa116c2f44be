"""The seed's Ansible side: the inventory generated from the database, and facts imported back.

``mko ansible inventory`` writes ``ansible/inventory/dynamic_inventory.ini`` (``settings.
ansible_inventory_path``): a group per cluster (``cluster_<name>``) and per role (``control_plane``,
``worker``), each host with its address, SSH user, port and key, and variables for every host that make
OpenSSH verify host keys against mko's known_hosts. The file is an inventory script whose every value
is marked unsafe (see :func:`render_inventory`): whatever a node's fields hold, Ansible never evaluates
it as a template. Once written, the file is rewritten shortly after every commit that changes a node
(but only by processes using the database it was generated from, through the sessions that
``mko.wiring.InventoryRefresher`` watches: ``mko.wiring`` sets that up), so it stays
current without anyone re-running the command.

The playbooks leave JSON facts in ``settings.ansible_facts_dir`` and call ``mko ansible import-facts``;
network facts go through the same interface choice as ``wol collect-mac``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from mko.inventory.nodes import get_node, update_node
from mko.inventory.schemas import WolConfigure
from mko.nic.collect import NodeNetwork, apply_network_facts, describe_row
from mko.nic.interfaces import choose_interface, parse_interfaces
from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform import validation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Cluster, Node, NodeRole
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.errors import ConflictError, InputError, MkoError
from mko.platform.files import locked_directory, write_atomic
from mko.platform.settings import Settings

__all__ = [
    "InventorySummary",
    "database_id",
    "flush_refresh",
    "import_facts",
    "inventory_data",
    "render_inventory",
    "request_refresh",
    "write_inventory",
]

log = logging.getLogger("mko.ansible")

_DATABASE_LINE = re.compile(r"^# mko-database: ([0-9a-f]{16})$", re.MULTILINE)
_GROUP_CHARS = re.compile(r"[^a-z0-9_]+")
_WAKE_MODES = re.compile(r"[a-z]{0,16}")
#: How the Wake-on-LAN playbook (and ``wol enable``) made the setting survive reboots.
PERSISTENCE_METHODS = ("NetworkManager", "systemd-networkd", "systemd-unit", "none")
# The heredoc's end line; JSON written by json.dumps on one line can never equal it.
_END = "MKO_INVENTORY_END"
#: How long the refresh after a change waits for more changes before it writes (one write per burst).
REFRESH_DEBOUNCE = 0.2


def database_id(url: str) -> str:
    """Return a short digest naming a database (its URL may hold a password, so never the URL)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _inert(text: str) -> dict[str, str]:
    """A string Ansible never treats as a template: the JSON form of Ansible's ``!unsafe``."""
    return {"__ansible_unsafe": text}


def _group(prefix: str, name: str) -> str:
    return prefix + (_GROUP_CHARS.sub("_", name.lower()).strip("_") or "unnamed")


@dataclass(frozen=True)
class InventorySummary:
    """What ``mko ansible inventory`` wrote."""

    path: Path
    hosts: int
    groups: dict[str, list[str]]
    skipped: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "path": str(self.path),
            "hosts": self.hosts,
            "groups": self.groups,
            "skipped": list(self.skipped),
        }


def inventory_data(
    session: Session, settings: Settings
) -> tuple[dict[str, Any], dict[str, list[str]], list[str]]:
    """Return what Ansible reads (``--list`` JSON), the groups (name -> host names), and the nodes left out.

    Every string value is wrapped as unsafe, so Ansible never evaluates it as a template whatever it
    holds; host names (dictionary keys, which cannot be wrapped) must be valid host names, and a node
    whose stored name is not (a row written before mko checked names) is left out and named.
    """
    nodes = list(session.scalars(select(Node).order_by(Node.id)))
    clusters = {c.id: c for c in session.scalars(select(Cluster).order_by(Cluster.id))}
    cluster_groups: dict[int, str] = {}
    used: set[str] = set()
    for cluster in clusters.values():
        name = _group("cluster_", cluster.name)
        if name in used:  # two names that differ only in punctuation
            name = f"{name}_{cluster.id}"
        used.add(name)
        cluster_groups[cluster.id] = name
    skipped: list[str] = []
    usable: list[Node] = []
    for node in nodes:
        try:
            validation.validate_hostname(node.hostname)
        except InputError as exc:
            skipped.append(f"node {node.id}: {exc.message}")
            continue
        usable.append(node)
    known_hosts = settings.ssh_known_hosts.absolute()
    ssh_args = f"-o UserKnownHostsFile={shlex.quote(str(known_hosts))} -o StrictHostKeyChecking=yes"
    hostvars: dict[str, dict[str, Any]] = {}
    document: dict[str, Any] = {
        "_meta": {"hostvars": hostvars},
        "all": {
            "vars": {
                "ansible_python_interpreter": _inert("/usr/bin/python3"),
                "ansible_pipelining": True,
                "ansible_ssh_common_args": _inert(ssh_args),
                "mko_facts_dir": _inert(str(settings.ansible_facts_dir.absolute())),
                "mko_python": _inert(sys.executable),
                "mko_workdir": _inert(str(Path.cwd())),
                "mko_database_id": _inert(database_id(settings.database_url)),
            }
        },
    }
    groups: dict[str, list[str]] = {}
    for node in usable:
        group = cluster_groups[node.cluster_id] if node.cluster_id is not None else "unassigned"
        groups.setdefault(group, []).append(node.hostname)
        host_vars: dict[str, Any] = {
            "ansible_host": _inert(node.ip_address),
            "ansible_port": node.ssh_port,
            "ansible_user": _inert(node.ssh_user),
        }
        key = node.ssh_key_path or (str(settings.ssh_default_key) if settings.ssh_default_key else None)
        if key:
            host_vars["ansible_ssh_private_key_file"] = _inert(key)
        host_vars["mko_node_id"] = node.id
        host_vars["mko_role"] = _inert(node.role.value)
        if node.wol_mac_address:
            host_vars["mko_mac"] = _inert(node.wol_mac_address)
        if node.nic_interface:
            host_vars["mko_nic_interface"] = _inert(node.nic_interface)
        hostvars[node.hostname] = host_vars
    for role in NodeRole:
        groups[_group("", role.value)] = [n.hostname for n in usable if n.role == role]
    for group, hosts in groups.items():
        document[group] = {"hosts": hosts}
    if clusters:
        document["clusters"] = {"children": list(cluster_groups.values())}
        for name in cluster_groups.values():
            document.setdefault(name, {"hosts": []})
    return document, groups, skipped


def render_inventory(session: Session, settings: Settings) -> tuple[str, dict[str, list[str]], list[str]]:
    """Return the inventory file: a shell script printing the JSON Ansible reads, and the groups.

    Ansible runs an executable inventory file (its ``script`` inventory plugin, enabled by default) and
    honours ``__ansible_unsafe`` in what it prints; a YAML inventory with ``!unsafe`` would do the same,
    but Ansible reads YAML only from files named .yml/.yaml/.json, and the guide's file is
    ``dynamic_inventory.ini``. The JSON is one line in a quoted heredoc: the shell expands nothing.
    """
    document, groups, skipped = inventory_data(session, settings)
    payload = json.dumps(document, ensure_ascii=True, sort_keys=False)
    lines = [
        "#!/bin/sh",
        f"# Ansible inventory of the mko database, written by mko on {utcnow():%Y-%m-%d %H:%M:%S} UTC.",
        "# Do not edit: mko rewrites it whenever a node changes (`mko ansible inventory` to force it).",
        "# Ansible runs this file and reads the JSON below; every value in it is marked unsafe, so",
        "# nothing stored in mko is ever evaluated as a template. Host keys are verified against mko's",
        "# known_hosts; `mko node trust ID` records a node's key.",
        f"# mko-database: {database_id(settings.database_url)}",
        *(f"# left out: {validation.printable(reason, 300)}" for reason in skipped),
        '[ "$1" = "--list" ] || { echo "{}"; exit 0; }',
        f"exec cat <<'{_END}'",
        payload,
        _END,
    ]
    return "\n".join(lines) + "\n", groups, skipped


def write_inventory(session: Session, settings: Settings, output: Path | None = None) -> InventorySummary:
    """Write the inventory file (atomically, one writer at a time) and return what it holds."""
    path = output or settings.ansible_inventory_path
    text, groups, skipped = render_inventory(session, settings)
    with locked_directory(path.parent):
        # Executable by its owner only: Ansible runs it; it names nodes, users and key paths.
        write_atomic(path, text.encode(), mode=0o700)
    hosts = len({host for members in groups.values() for host in members})
    log.info("ansible inventory written to %s (%d hosts)", path, hosts)
    for reason in skipped:
        log.warning("ansible inventory: left out %s", reason)
    return InventorySummary(path, hosts, groups, tuple(skipped))


# ----------------------------------------------------------------------------- keeping it current


def _tracked(settings: Settings) -> bool:
    """Return whether the inventory file exists and was generated from this process's database."""
    try:
        with settings.ansible_inventory_path.open(errors="replace") as handle:
            head = handle.read(4000)
    except OSError:
        return False
    match = _DATABASE_LINE.search(head)
    return match is not None and match.group(1) == database_id(settings.database_url)


class _Refresher:
    """Rewrites the inventory after node changes: one thread, after a short pause, once per burst.

    A commit only records that a refresh is due (no Session, no file I/O in the committing thread,
    whose Session may still hold its pooled connection); the thread then reads the nodes with its
    own Session and writes the file under the directory lock, so processes never interleave either.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[str, tuple[Engine, Settings]] = {}
        self._busy = False
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def request(self, engine: Engine, settings: Settings) -> None:
        """Note that ``engine``'s nodes changed; the file is rewritten shortly (if it is tracked)."""
        with self._changed:
            self._due[engine.url.render_as_string(hide_password=False)] = (engine, settings)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mko-inventory-refresh", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
            self._changed.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every requested refresh is written; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._due and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._due))
            time.sleep(REFRESH_DEBOUNCE)  # let the rest of a burst of changes land first
            with self._changed:
                due, self._due = self._due, {}
                self._busy = True
            try:
                for url, (engine, settings) in due.items():
                    _refresh(url, engine, settings)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()


def _refresh(url: str, engine: Engine, settings: Settings) -> None:
    try:
        if url != make_url(settings.database_url).render_as_string(hide_password=False):
            return  # another database (a test's, the lab's): the file belongs to the configured one
        if not _tracked(settings):
            return
        with Session(engine) as fresh:
            write_inventory(fresh, settings)
    except Exception:
        # A stale inventory must never fail the change that made it stale.
        log.exception("could not refresh the Ansible inventory")


# One writer thread per process, whatever the number of session factories watched.
_refresher = _Refresher()


def request_refresh(engine: Engine, settings: Settings) -> None:
    """Rewrite the inventory of ``settings`` shortly, from ``engine``'s nodes (if the file is tracked)."""
    _refresher.request(engine, settings)


def flush_refresh(timeout: float = 30.0) -> bool:
    """Wait until the refreshes requested by this process's commits are written."""
    return _refresher.flush(timeout)


# ----------------------------------------------------------------------------- importing facts


def _fact_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.glob("*.json") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise InputError("path", f"{path} does not exist")
    if not files:
        raise InputError("path", f"no facts (*.json) in {', '.join(str(p) for p in paths)}")
    return files


def _node_of(session: Session, facts: dict[str, Any]) -> Node:
    node_id = facts.get("node_id")
    if not isinstance(node_id, int):
        raise InputError("node_id", "the facts name no node id (mko_node_id missing in the inventory?)")
    node = get_node(session, node_id)
    host = facts.get("inventory_hostname")
    if host is not None and host != node.hostname:
        raise ConflictError(
            f"facts of {validation.quoted(host)} name node {node_id}, which is {node.hostname!r}:"
            " inventory is stale"
        )
    return node


def _import_network(session: Session, node: Node, facts: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    raw = facts.get("ip") or {}
    if not isinstance(raw, dict):
        raise InputError("ip", "the network facts must be an object with link, addr and route")
    interfaces = parse_interfaces(
        str(raw.get("link", "")), str(raw.get("addr", "")), str(raw.get("route", ""))
    )
    network = NodeNetwork(node.id, node.hostname, interfaces)
    try:
        network.choice = choose_interface(interfaces, node.ip_address)
    except MkoError as exc:
        network.error = str(exc)
    return apply_network_facts(session, node, network, overwrite=overwrite)


def _wol_fact(facts: dict[str, Any], key: str, check: Callable[[str, str], Any]) -> Any:
    """A fact of the Wake-on-LAN playbook, checked like user input (None or empty: not reported)."""
    value = facts.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(key, f"the node reported {type(value).__name__}, not text")
    return check(value, key)


def _wake_modes(value: str, field: str) -> str:
    # ethtool's Wake-on letters: p u m b a g s f d (and none other so far).
    if not _WAKE_MODES.fullmatch(validation.check_text(value, field, max_length=64)):
        raise InputError(field, f"{validation.quoted(value)} is not an ethtool Wake-on mode string")
    return value


def _persistence(value: str, field: str) -> str:
    if value not in PERSISTENCE_METHODS:
        raise InputError(field, f"{validation.quoted(value)} is not one of {', '.join(PERSISTENCE_METHODS)}")
    return value


def _import_wol(session: Session, node: Node, facts: dict[str, Any]) -> dict[str, Any]:
    # Every fact is checked before anything is stored: one bad value refuses the whole entry.
    interface = _wol_fact(facts, "interface", validation.validate_interface)
    mac = _wol_fact(facts, "mac", validation.normalize_mac)
    supports = _wol_fact(facts, "supports", _wake_modes) or ""
    wake_on = _wol_fact(facts, "wake_on", _wake_modes) or ""
    persistence = _wol_fact(facts, "persistence", _persistence)
    node.nic_interface = interface or node.nic_interface
    node.nic_wol_supported = supports
    node.nic_wol_state = wake_on
    if persistence:
        node.nic_wol_persistence = persistence
    node.nic_checked_at = utcnow()
    if node.wol_mac_address is None and mac:
        node.wol_mac_address = mac
    session.commit()
    row: dict[str, Any] = {
        "node_id": node.id,
        "hostname": node.hostname,
        "interface": node.nic_interface,
        "supports_wake_on": node.nic_wol_supported,
        "wake_on": node.nic_wol_state,
        "persistence": node.nic_wol_persistence,
    }
    if "g" in node.nic_wol_state and not node.wol_enabled:
        # The playbook did what `wol enable` does to the card; the flag follows, as with `wol enable`.
        update_node(session, node.id, WolConfigure(wol_enabled=True))
        row["wol_enabled"] = "enabled"
    if "g" in node.nic_wol_state:
        row["state"] = "armed"
    else:
        row["state"] = "off" if "g" in node.nic_wol_supported else "unsupported"
    return row


def import_facts(
    session: Session,
    settings: Settings,
    paths: Sequence[Path] = (),
    *,
    data: Any = None,
    keep: Path | None = None,
    overwrite: bool = False,
    actor: Actor,
    expect_database: str | None = None,
) -> Operation:
    """Import facts as one operation: files or directories of JSON, and/or DATA (what a playbook piped).

    ``keep`` writes DATA to that file too, so it can be looked at or imported again later.
    """
    if expect_database is not None and expect_database != database_id(settings.database_url):
        raise ConflictError(
            "these facts come from an inventory of another mko database; regenerate it with "
            "`mko ansible inventory` using the same settings (MKO_DATABASE_URL) as this import"
        )
    documents: list[tuple[str, Any]] = []
    if data is not None:
        documents.append((keep.name if keep else "stdin", data))
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.write_text(json.dumps(data, indent=2) + "\n")
    for path in _fact_files(paths) if paths else []:
        try:
            documents.append((path.name, json.loads(path.read_text())))
        except (OSError, ValueError) as exc:
            documents.append((path.name, exc))
    if not documents:
        raise InputError("path", "give facts files, directories, or - for standard input")
    operation = start_operation(
        session,
        kind="ansible_import_facts",
        target_type="nodes",
        target_id=None,
        actor=actor,
        parameters={"sources": [name for name, _ in documents], "overwrite": overwrite},
        summary=f"importing facts from {len(documents)} source(s)",
    )
    rows: list[dict[str, Any]] = []
    for name, document in documents:
        # A playbook leaves one list with every host's facts; a single object is accepted too.
        entries = document if isinstance(document, list) else [document]
        for index, entry in enumerate(entries):
            where = f"{name}[{index}]" if len(entries) > 1 else name
            rows.append(_import_entry(session, operation, where, entry, overwrite))
    failed = sum(1 for row in rows if row["state"] in ("failed", "conflict"))
    good = len(rows) - failed
    summary = f"{good}/{len(rows)} fact(s) imported"
    if failed:
        summary += "; " + "; ".join(
            f"{r.get('hostname') or r['source']}: {r['error']}" for r in rows if r["error"]
        )
    if not failed:
        status = OperationStatus.SUCCEEDED
    else:
        status = OperationStatus.PARTIAL if good else OperationStatus.FAILED
    return finish_operation(session, operation, status=status, summary=summary, result={"facts": rows})


def _import_entry(
    session: Session, operation: Operation, where: str, entry: Any, overwrite: bool
) -> dict[str, Any]:
    """Import one host's facts as one step; return its result row (state "failed" with the error)."""
    node_id: int | None = None

    def step(status: OperationStatus, message: str, detail: dict[str, Any] | None = None) -> None:
        name = f"import {where}"
        record_step(
            session, operation, name=name, status=status, node_id=node_id, message=message, detail=detail
        )

    try:
        if isinstance(entry, Exception):
            raise InputError("path", f"{where}: not readable JSON: {entry}")
        if not isinstance(entry, dict):
            raise InputError("path", f"{where}: a facts entry must be a JSON object")
        node = _node_of(session, entry)
        node_id = node.id
        kind = entry.get("kind")
        if kind == "network_info":
            row = _import_network(session, node, entry, overwrite)
            message = describe_row(row)
        elif kind == "wake_on_lan":
            row = _import_wol(session, node, entry)
            message = f"{row['interface']}: Wake-on {row['wake_on'] or '?'} ({row['state']})"
        else:
            raise InputError("kind", f"{where}: unknown facts kind {validation.quoted(kind)}")
    except MkoError as exc:
        session.rollback()
        step(OperationStatus.FAILED, str(exc))
        return {"source": where, "node_id": node_id, "hostname": None, "state": "failed", "error": str(exc)}
    failed = row["state"] in ("failed", "conflict")
    step(OperationStatus.FAILED if failed else OperationStatus.SUCCEEDED, message, row)
    return row | {"kind": kind, "source": where, "error": row.get("error")}
