"""Alembic migrations build the schema the models describe, in revisions users can rely on."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from mko.platform.db.migrate import current_revision, head_revision
from mko.platform.db.models.base import Base
from mko.platform.db.models.inventory import Node
from mko.platform.db.revision import HEAD, database_revision
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade
from support.foldcheck import check_power_params_fold

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


def test_0016_folds_every_power_column_without_loss(tmp_path: Path) -> None:
    """From a database at 0018 (main's head before it) through 0016 and 0019, and back down to 0018."""
    check_power_params_fold(f"sqlite:///{tmp_path / 'x.db'}")


def test_a_database_at_0015_upgrades_through_0018_0016_0019_and_keeps_its_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0015")
    with engine.begin() as connection:  # the model is today's (power_params): a 0015 row is written in SQL
        connection.exec_driver_sql(
            "INSERT INTO nodes (hostname, ip_address, ssh_user, ssh_port, role, description, created_at,"
            " wol_enabled, wol_method, wol_port, is_virtual_node, cordoned_by_mko, bmc_address, bmc_username,"
            " bmc_verify_tls) VALUES ('old1', '10.0.0.1', 'u', 22, 'worker', '', '2026-01-01', 1, 'ipmi', 9,"
            " 0, 0, '10.0.0.9', 'admin', 1)"
        )
    upgrade(engine)
    assert database_revision(engine) == HEAD == "0019"
    tables = ("nodes", "operation_steps")
    indexes = {ix["name"] for table in tables for ix in inspect(engine).get_indexes(table)}
    assert {"ix_nodes_role", "ix_nodes_reachable", "ix_operation_steps_node_id"} <= indexes
    assert "node_dependencies" in inspect(engine).get_table_names()
    with Session(engine) as session:
        [node] = session.scalars(select(Node)).all()
        assert (node.hostname, node.power_method) == ("old1", "ipmi")
        assert node.power_params == {"bmc_address": "10.0.0.9", "bmc_username": "admin"}
        assert node.dependencies == []
    engine.dispose()
