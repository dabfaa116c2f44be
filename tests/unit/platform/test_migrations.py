"""Alembic migrations build the schema the models describe, in revisions users can rely on."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from mko.platform.db.migrate import current_revision, head_revision
from mko.platform.db.models.base import Base
from mko.platform.db.models.inventory import Node
from mko.platform.db.revision import HEAD, database_revision
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade

WOL_FIELDS = {
    "wol_enabled",
    "wol_mac_address",
    "wol_method",
    "wol_port",
    "wol_broadcast_address",
    "is_virtual_node",
    "proxmox_vm_id",
    "proxmox_host_id",
}


def test_empty_database_upgrades_to_head_and_matches_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert current_revision(engine) is None
    assert database_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    # The CLI's Alembic-free check agrees: a new migration must change revision.HEAD too.
    assert database_revision(engine) == HEAD == head_revision()
    with engine.connect() as connection:
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert diff == []


def test_wol_fields_arrive_in_their_own_revision_with_seed_defaults(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine, "0001")
    columns = {c["name"] for c in inspect(engine).get_columns("nodes")}
    assert not WOL_FIELDS & columns
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO clusters (name, description, created_at) VALUES ('c', '', '2026-01-01')"
        )
        connection.exec_driver_sql(
            "INSERT INTO nodes (hostname, ip_address, ssh_user, ssh_port, role, cluster_id, description,"
            " created_at) VALUES ('old-node', '10.0.0.5', 'ubuntu', 22, 'worker', 1, '', '2026-01-01')"
        )
    upgrade(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("nodes")}
    assert columns >= WOL_FIELDS
    with engine.connect() as connection:
        row = connection.exec_driver_sql(
            "SELECT wol_enabled, wol_method, wol_port, is_virtual_node, wol_mac_address FROM nodes"
        ).one()
    engine.dispose()
    assert tuple(row) == (0, "ethernet", 9, 0, None)


def test_revision_0018_indexes_an_existing_database_and_keeps_its_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0015")
    with Session(engine) as session:  # 0018 adds indexes only: today's model fits a 0015 table
        session.add(Node(hostname="old1", ip_address="10.0.0.1"))
        session.commit()
    upgrade(engine)
    tables = ("nodes", "operation_steps")
    indexes = {ix["name"] for table in tables for ix in inspect(engine).get_indexes(table)}
    assert {"ix_nodes_role", "ix_nodes_reachable", "ix_operation_steps_node_id"} <= indexes
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT hostname FROM nodes").scalars().all() == ["old1"]
    engine.dispose()
