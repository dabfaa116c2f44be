"""The seed's `python scripts/migrate_wake_on_lan_fields.py` on real SQLite files and a real PostgreSQL.

The earlier orchestrator's database is built here the way its Flask-SQLAlchemy models would have: its
clusters, its nodes without WoL fields (with status, timestamps, notes and JSON network info), its own
operations table (whose name mko also uses), its own Flask-Migrate alembic_version and an index named
like one of mko's. The script always runs in a subprocess, as a person would run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    inspect,
    text,
)
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from mko.cli.root import app
from mko.inventory.clusters import list_clusters
from mko.inventory.nodes import create_node, list_nodes
from mko.inventory.schemas import NodeCreate
from mko.lab.postgres import PostgresServer
from mko.platform.db.backup import backup_sqlite
from mko.platform.db.migrate import current_revision, head_revision
from mko.platform.db.models.base import Base
from mko.platform.db.models.inventory import NodeRole
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade, upgrade_database
from mko.platform.settings import Settings, get_settings
from support.foldcheck import check_power_params_fold

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = "scripts/migrate_wake_on_lan_fields.py"
# A Python outside the venv (the one it was made from): the seed's `python scripts/…` must work with it.
OUTSIDE_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")


# ---------------------------------------------------------------- the earlier orchestrator's database


def legacy_metadata() -> MetaData:
    """The earlier orchestrator's tables."""
    metadata = MetaData()
    Table(
        "clusters",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(100), nullable=False, unique=True),
        Column("description", Text),
        Column("ha_enabled", Boolean, default=False),
        Column("created_at", DateTime),
        Column("updated_at", DateTime),
    )
    Table(
        "nodes",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("hostname", String(255), nullable=False, unique=True),
        Column("ip_address", String(45), nullable=False),
        Column("ssh_user", String(50)),
        Column("ssh_port", Integer),
        Column("ssh_key_path", String(500)),
        Column("is_control_plane", Boolean, default=False),
        Column("cluster_id", Integer, ForeignKey("clusters.id"), index=True),  # ix_nodes_cluster_id, as mko's
        Column("status", String(20)),
        Column("last_seen", DateTime),
        Column("network_info", Text),
        Column("notes", Text),
        Column("created_at", DateTime),
        Column("updated_at", DateTime),
    )
    Table(
        "operations",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("operation_type", String(50)),
        Column("status", String(20)),
        Column("node_id", Integer, ForeignKey("nodes.id")),
        Column("output", Text),
        Column("created_at", DateTime),
    )
    Table("alembic_version", metadata, Column("version_num", String(32), primary_key=True))
    return metadata


T0 = datetime(2024, 3, 1, 9, 30, 15)
CLUSTERS = [
    {"id": 1, "name": "production", "description": "rack A", "ha_enabled": True, "created_at": T0},
    {"id": 4, "name": "Lab — 2nd floor", "description": None, "ha_enabled": False, "created_at": T0},
]
# node id → (network_info, the MAC mko should carry over)
NETWORK_INFO: dict[int, tuple[str | None, str | None]] = {
    1: (json.dumps({"mac_address": "AA-BB-CC-00-00-01"}), "aa:bb:cc:00:00:01"),
    2: (
        json.dumps(
            {
                "interfaces": [
                    {"name": "wlan0", "mac": "AA:BB:CC:00:00:99", "ip": "192.168.1.50"},
                    {"name": "eno1", "mac": "aabb.cc00.0002", "ip": "10.20.0.2"},
                ]
            }
        ),
        "aa:bb:cc:00:00:02",
    ),
    3: (
        json.dumps({"interfaces": {"eth0": {"mac": "AABBCC000003", "addresses": ["10.20.0.3/24"]}}}),
        "aa:bb:cc:00:00:03",
    ),
    5: (json.dumps({"mac": "01:00:5e:00:00:01"}), None),  # multicast: reported, not imported
    6: (json.dumps({"mac": "00:00:00:00:00:00"}), None),  # all-zero: reported
    7: ("{not json", None),  # reported
    8: (json.dumps({"mac": "aa:bb:cc:00:00:01"}), None),  # node 1's MAC again: reported
}
MAC_PROBLEM_NODES = {5, 6, 7, 8}


def legacy_nodes(*, orphan: bool) -> list[dict[str, Any]]:
    """Thirty nodes with odd but valid values; ids with gaps."""
    ids = [*range(1, 29), 40, 41]
    nodes = []
    for index, node_id in enumerate(ids):
        cluster = 1 if index < 20 else 4
        nodes.append(
            {
                "id": node_id,
                "hostname": f"node-{node_id:02d}.k8s.example.org",
                "ip_address": f"10.20.0.{node_id}",
                "ssh_user": "ubuntu",
                "ssh_port": 22,
                "ssh_key_path": "/root/.ssh/id_ed25519",
                "is_control_plane": index in (0, 1, 2, 20),
                "cluster_id": cluster,
                "status": "online" if index % 3 else "offline",
                "last_seen": T0,
                "network_info": NETWORK_INFO.get(node_id, (None, None))[0],
                "notes": "",
                "created_at": T0,
                "updated_at": T0,
            }
        )
    nodes[0] |= {"hostname": "CP-01.K8S.example.org", "ssh_port": 2222, "notes": 'says "hi"\nand leaves'}
    nodes[1] |= {"ssh_user": "svc_k8s.admin-1", "ssh_key_path": "/home/ops/keys/id ed25519 (old)"}
    nodes[3] |= {"ssh_user": None, "ssh_port": None, "ssh_key_path": None}  # → ubuntu, 22
    nodes[4] |= {"ip_address": "10.255.255.254", "ssh_port": 65535}
    nodes[9] |= {"cluster_id": None}  # a node in no cluster
    nodes[28] |= {"hostname": "w" * 63}
    if orphan:  # SQLite without foreign keys let the old app keep a node of a deleted cluster
        nodes[29] |= {"cluster_id": 9}
    return nodes


def build_legacy(url: str, *, orphan: bool = False) -> list[dict[str, Any]]:
    """Write the earlier orchestrator's database at ``url`` (journal mode left at its default)."""
    engine = create_engine(url, poolclass=NullPool)
    metadata = legacy_metadata()
    nodes = legacy_nodes(orphan=orphan)
    with engine.begin() as connection:
        metadata.create_all(connection)
        connection.execute(insert(metadata.tables["clusters"]), CLUSTERS)
        connection.execute(insert(metadata.tables["nodes"]), nodes)
        connection.execute(
            insert(metadata.tables["operations"]),
            [
                {"id": i, "operation_type": "wake", "status": "success", "node_id": 1, "created_at": T0}
                for i in range(1, 6)
            ],
        )
        connection.execute(insert(metadata.tables["alembic_version"]), [{"version_num": "3f1a9c2b7d10"}])
    engine.dispose()
    return nodes


def check_imported(url: str, nodes: list[dict[str, Any]], *, orphan: bool = False) -> None:
    """Every old row is in mko's schema with its values and the seed's defaults."""
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        with make_session_factory(engine)() as session:
            clusters = {c.id: c for c in list_clusters(session)}
            assert {i: (c.name, c.description) for i, c in clusters.items()} == {
                1: ("production", "rack A"),
                4: ("Lab — 2nd floor", ""),
            }
            imported = {n.id: n for n in list_nodes(session)}
            assert sorted(imported) == sorted(n["id"] for n in nodes)
            for old in nodes:
                node = imported[old["id"]]
                expected_cluster = None if orphan and old["cluster_id"] == 9 else old["cluster_id"]
                assert (
                    node.hostname,
                    node.ip_address,
                    node.ssh_user,
                    node.ssh_port,
                    node.ssh_key_path,
                    node.role,
                    node.cluster_id,
                    node.description,
                ) == (
                    old["hostname"],
                    old["ip_address"],
                    old["ssh_user"] or "ubuntu",
                    old["ssh_port"] or 22,
                    old["ssh_key_path"],
                    NodeRole.CONTROL_PLANE if old["is_control_plane"] else NodeRole.WORKER,
                    expected_cluster,
                    old["notes"],
                ), old["id"]
                assert (node.wol_enabled, node.wol_method, node.wol_port, node.is_virtual_node) == (
                    False,
                    "ethernet",
                    9,
                    False,
                )
                assert (node.proxmox_vm_id, node.proxmox_host_id, node.wol_broadcast_address) == (None,) * 3
                assert node.wol_mac_address == NETWORK_INFO.get(old["id"], (None, None))[1], old["id"]
                assert node.created_at.replace(tzinfo=None) == T0
            # Ids continue after the imported ones (PostgreSQL: the sequence was moved past them).
            new = create_node(
                session, NodeCreate(hostname="after-import", ip_address="10.20.1.1", cluster_id=4)
            )
            assert new.id == max(imported) + 1
    finally:
        engine.dispose()


# ---------------------------------------------------------------- running it


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(env: dict[str, str], *args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """The seed's script, from the repository root, with a Python (the venv's unless told)."""
    return subprocess.run(
        [python, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def environment(tmp_path: Path, url: str) -> dict[str, str]:
    return os.environ | {
        "MKO_DATABASE_URL": url,
        "MKO_LOG_DIR": str(tmp_path / "logs"),
        "MKO_CONFIG": str(tmp_path / "absent.toml"),
    }


def backups(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.backup-*"))


def one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1, stderr
    return stderr


# ---------------------------------------------------------------- SQLite


def test_seed_command_imports_the_earlier_orchestrators_database(tmp_path: Path, settings: Settings) -> None:
    db = tmp_path / "orchestrator.db"
    url = f"sqlite:///{db}"
    nodes = build_legacy(url, orphan=True)
    original = db.read_bytes()
    env = environment(tmp_path, url)

    # The dry run in-process (the same Typer app the script runs); the real runs as the seed's command.
    dry = CliRunner().invoke(app, ["db", "migrate-wol", "--database", str(db), "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output + dry.stderr
    report = json.loads(dry.stdout)
    assert (report["kind"], report["dry_run"], report["changed"]) == ("legacy", True, False)
    assert (report["clusters"], report["nodes"], report["macs_carried_over"]) == (2, 30, 3)
    assert {int(line.split()[1]) for line in report["macs_not_imported"]} == MAC_PROBLEM_NODES
    assert any("cluster 9, which does not exist" in note for note in report["notes"])
    assert db.read_bytes() == original and backups(tmp_path, db.name) == []

    # Exactly the seed's command, with a Python that lacks mko's dependencies (it re-runs in the venv).
    first = run(env, python=OUTSIDE_PYTHON)
    assert first.returncode == 0, first.stderr
    for step in ("1/4 backup", "2/4 schema", "3/4 defaults", "4/4 verify: ok"):
        assert step in first.stdout
    [backup] = backups(tmp_path, db.name)
    assert str(backup) in first.stdout.replace("\n", "")
    assert backup.read_bytes() == original  # the online backup API's copy, byte for byte
    check_imported(url, nodes, orphan=True)

    engine = make_engine(url)
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        assert {"legacy_nodes", "legacy_clusters", "legacy_operations", "legacy_alembic_version"} <= tables
        assert connection.execute(text("SELECT count(*) FROM legacy_nodes")).scalar() == 30
        assert connection.execute(text("SELECT count(*) FROM legacy_operations")).scalar() == 5
        assert connection.execute(text("SELECT count(*) FROM operations")).scalar() == 0
    engine.dispose()

    before_second = digest(db)
    second = run(env)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert digest(db) == before_second
    assert len(backups(tmp_path, db.name)) == 1


@pytest.mark.parametrize("step", ["schema", "commit"])
def test_injected_failure_restores_the_original_byte_for_byte(tmp_path: Path, step: str) -> None:
    db = tmp_path / "orchestrator.db"
    url = f"sqlite:///{db}"
    build_legacy(url)
    original = db.read_bytes()
    failed = run(environment(tmp_path, url), "--fail-after", step)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    message = one_line(failed.stderr)
    assert f"failure injected after step '{step}'" in message and "restored from the backup" in message
    assert db.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(db.name)) == [
        db.name,
        backups(tmp_path, db.name)[0].name,
    ]  # no -wal, -shm or -journal left beside the restored file


def test_a_database_that_is_not_an_orchestrators_is_refused_untouched(
    tmp_path: Path, settings: Settings
) -> None:
    db = tmp_path / "shop.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.exec_driver_sql("CREATE TABLE nodes (id INTEGER PRIMARY KEY, label TEXT)")
        connection.exec_driver_sql("INSERT INTO customers (name) VALUES ('Ada')")
    engine.dispose()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    listing = sorted(p.name for p in tmp_path.iterdir())
    original = db.read_bytes()
    env = environment(tmp_path, f"sqlite:///{db}")

    refused = run(env)
    assert refused.returncode == 2
    assert "not an orchestrator database" in one_line(refused.stderr)
    assert "nothing was changed" in refused.stderr
    text_file = CliRunner().invoke(app, ["db", "migrate-wol", "--database", str(notes)])
    assert text_file.exit_code == 2 and "is not a SQLite database" in one_line(text_file.stderr)
    assert db.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "logs") == listing


def _mko_database_at_0001(path: Path) -> None:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO clusters (id, name, description, created_at) VALUES (1, 'c', '', '2026-01-01')"
        )
        for i in range(1, 4):
            connection.execute(
                text(
                    "INSERT INTO nodes (hostname, ip_address, ssh_user, ssh_port, role, cluster_id,"
                    " description, created_at) VALUES (:h, :ip, 'ubuntu', 22, 'worker', 1, '', '2026-01-01')"
                ),
                {"h": f"n{i}", "ip": f"10.0.0.{i}"},
            )
    engine.dispose()


def test_mko_databases_go_through_alembic_and_db_upgrade_backs_up_first(
    tmp_path: Path, cli: CliRunner, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (the same Typer app the script runs): these are about mko's own databases.
    old = tmp_path / "old.db"
    _mko_database_at_0001(old)
    migrated = cli.invoke(app, ["db", "migrate-wol", "--database", str(old)])
    assert migrated.exit_code == 0, migrated.output + migrated.stderr
    assert f"Alembic upgrade 0001 → {head_revision()}" in migrated.stdout
    assert len(backups(tmp_path, old.name)) == 1
    engine = make_engine(f"sqlite:///{old}")
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT wol_enabled, wol_method, wol_port, is_virtual_node FROM nodes"
        )
        assert [tuple(r) for r in rows] == [(0, "ethernet", 9, 0)] * 3
    engine.dispose()

    def use(db: Path) -> None:
        monkeypatch.setenv("MKO_DATABASE_URL", f"sqlite:///{db}")
        get_settings.cache_clear()

    for name, flags, expected_backups in (("up.db", [], 1), ("nobackup.db", ["--no-backup"], 0)):
        db = tmp_path / name
        _mko_database_at_0001(db)
        use(db)
        result = cli.invoke(app, ["db", "upgrade", *flags])
        assert result.exit_code == 0, result.output + result.stderr
        assert f"upgraded from 0001 to {head_revision()}" in result.stdout
        assert len(backups(tmp_path, name)) == expected_backups

    legacy = tmp_path / "legacy.db"
    build_legacy(f"sqlite:///{legacy}")
    original = legacy.read_bytes()
    use(legacy)
    refused = cli.invoke(app, ["db", "upgrade"])
    assert refused.exit_code == 2 and "mko db migrate-wol" in one_line(refused.stderr)
    assert legacy.read_bytes() == original


def test_sqlite_backup_is_consistent_while_a_writer_commits(tmp_path: Path) -> None:
    # As when `mko serve` writes during `mko db upgrade`: WAL mode, commits every few milliseconds.
    db = tmp_path / "busy.db"
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode=wal")
    setup.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, pad TEXT)")
    setup.commit()
    committed = [0]
    stop = threading.Event()

    def write() -> None:
        writer = sqlite3.connect(db, timeout=5)
        while not stop.is_set():
            writer.execute("INSERT INTO t VALUES (?, ?)", (committed[0], "x" * 300))
            writer.commit()
            committed[0] += 1
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for i in range(3):
            time.sleep(0.1)
            before = committed[0]
            copy = tmp_path / f"copy{i}.db"
            backup_sqlite(db, copy)
            check = sqlite3.connect(copy)
            count, highest = check.execute("SELECT count(*), max(n) FROM t").fetchone()
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            check.close()
            assert count >= before > 0  # everything committed before the backup began (WAL included)
            assert highest == count - 1  # one snapshot, no torn or missing rows
    finally:
        stop.set()
        thread.join()
        setup.close()


# ---------------------------------------------------------------- PostgreSQL


def _snapshot(engine: Engine) -> dict[str, Any]:
    """Every table of every schema with its rows, to compare a database before and after."""
    with engine.connect() as connection:
        tables = connection.execute(
            text(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        ).all()
        return {
            f"{schema}.{table}": sorted(
                map(repr, connection.exec_driver_sql(f'SELECT * FROM "{schema}"."{table}"').all())  # noqa: S608
            )
            for schema, table in tables
        }


def test_full_schema_migrates_on_postgresql(postgres: PostgresServer) -> None:
    url = postgres.create_database("schema_check")
    assert upgrade_database(url) == (None, head_revision(), None)  # `mko db upgrade` on a new database
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            diff = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
    finally:
        engine.dispose()


def test_power_params_fold_round_trips_on_postgresql(postgres: PostgresServer) -> None:
    check_power_params_fold(postgres.create_database("power_params_fold"))


def test_postgresql_import_backup_and_restore(
    postgres: PostgresServer, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database("legacy_ok")
    nodes = build_legacy(url)
    env = environment(tmp_path, url)
    engine = create_engine(url, poolclass=NullPool)
    before = _snapshot(engine)

    dry = CliRunner().invoke(app, ["db", "migrate-wol", "--database", url, "--dry-run"])
    assert dry.exit_code == 0, dry.output + dry.stderr
    assert "would succeed" in dry.stdout
    assert _snapshot(engine) == before
    (tmp_path / "bin").mkdir()
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # pg_dump cannot be found
    no_tools = CliRunner().invoke(app, ["db", "migrate-wol", "--database", url])
    monkeypatch.setenv("PATH", path)
    assert no_tools.exit_code == 2 and "--no-backup" in one_line(no_tools.stderr)
    assert _snapshot(engine) == before

    done = run(env, "--backup-dir", str(tmp_path / "bk"))
    assert done.returncode == 0, done.stderr
    [dump] = backups(tmp_path / "bk", "legacy_ok")
    assert "CREATE TABLE public.nodes" in dump.read_text()
    check_imported(url, nodes)
    after = _snapshot(engine)
    assert after["legacy.nodes"] == before["public.nodes"]
    assert after["legacy.operations"] == before["public.operations"]

    # A failure after the commit: the restore from pg_dump's backup brings back exactly the old database.
    url2 = postgres.create_database("legacy_fail")
    build_legacy(url2)
    engine2 = create_engine(url2, poolclass=NullPool)
    before2 = _snapshot(engine2)
    failed = run(environment(tmp_path, url2), "--backup-dir", str(tmp_path / "bk"), "--fail-after", "commit")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "restored from the backup" in one_line(failed.stderr)
    assert _snapshot(engine2) == before2
    engine.dispose()
    engine2.dispose()
