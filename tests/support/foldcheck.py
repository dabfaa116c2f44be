"""Revision 0016 (chained after 0018) folds the power columns into ``power_params`` without loss: one
check for SQLite (tests/unit/platform/test_migrations.py) and PostgreSQL (tests/integration/inventory)."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import Connection, Engine, text

from mko.platform.db.migrate import alembic_config, current_revision, head_revision
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade

__all__ = ["check_power_params_fold"]


FOLDED_ROWS = [
    # (hostname, method, extra columns as of 0018)
    (
        "pkt",
        "ethernet",
        {"wol_interface": "eth1", "wol_prefix_len": 24, "wol_secureon_encrypted": "gAAAA-so"},
    ),
    ("raw", "ethernet-raw", {"wol_interface": "enp3s0"}),
    ("vm", "proxmox", {"proxmox_node": "pve2"}),
    (
        "bmc",
        "ipmi",
        {
            "bmc_address": "10.0.0.9",
            "bmc_port": 6230,
            "bmc_username": "admin",
            "bmc_password_encrypted": "gAAAA-pw",
        },
    ),
    (
        "rf",
        "redfish",
        {
            "redfish_url": "https://10.0.0.8",
            "redfish_system_id": "1",
            "bmc_username": "root",
            "bmc_password_encrypted": "gAAAA-rf",
            "bmc_verify_tls": False,
            "bmc_ca_file": "/ca.pem",
        },
    ),
    # Values of several methods at once: all are kept, whichever method is current.
    (
        "mixed",
        "ethernet",
        {"wol_prefix_len": 16, "bmc_address": "bmc.lan", "redfish_url": "https://r", "proxmox_node": "pve1"},
    ),
]
FOLDED_COLUMNS = (
    "wol_interface",
    "wol_prefix_len",
    "wol_secureon_encrypted",
    "proxmox_node",
    "bmc_address",
    "bmc_port",
    "bmc_username",
    "bmc_password_encrypted",
    "redfish_url",
    "redfish_system_id",
    "bmc_verify_tls",
    "bmc_ca_file",
)


def _old_rows(connection: Connection) -> list[tuple[object, ...]]:
    columns = ", ".join(("hostname", "wol_method", *FOLDED_COLUMNS))
    return [tuple(r) for r in connection.exec_driver_sql(f"SELECT {columns} FROM nodes ORDER BY id")]  # noqa: S608 - fixed names


def check_power_params_fold(url: str) -> None:
    """Revision 0016 on an empty database at ``url``: fold, check, unfold, compare, fold again."""
    engine = make_engine(url)
    try:
        _fold_round_trip(engine)
    finally:
        engine.dispose()


def _fold_round_trip(engine: Engine) -> None:
    upgrade(engine, "0018")
    with engine.begin() as connection:
        for index, (hostname, method, extra) in enumerate(FOLDED_ROWS):
            columns = {
                "hostname": hostname,
                "ip_address": f"10.1.0.{index}",
                "ssh_user": "u",
                "ssh_port": 22,
                "role": "worker",
                "description": "",
                "created_at": "2026-01-01",
                "wol_enabled": False,
                "wol_method": method,
                "wol_port": 9,
                "is_virtual_node": method == "proxmox",
                "cordoned_by_mko": False,
                "bmc_verify_tls": True,
            } | extra
            names = ", ".join(columns)
            marks = ", ".join(f":{c}" for c in columns)
            connection.execute(text(f"INSERT INTO nodes ({names}) VALUES ({marks})"), columns)  # noqa: S608
        before = _old_rows(connection)
    upgrade(engine)
    with engine.connect() as connection:
        stored = {
            hostname: json.loads(params) if isinstance(params, str) else params
            for hostname, params in connection.exec_driver_sql("SELECT hostname, power_params FROM nodes")
        }
    assert stored["pkt"] == {
        "wol_interface": "eth1",
        "wol_prefix_len": 24,
        "wol_secureon": {"fernet": "gAAAA-so"},
    }
    assert stored["rf"]["bmc_password"] == {"fernet": "gAAAA-rf"} and stored["rf"]["bmc_verify_tls"] is False
    assert "bmc_verify_tls" not in stored["bmc"]  # absent means the default, true
    assert stored["mixed"] == {
        "wol_prefix_len": 16,
        "bmc_address": "bmc.lan",
        "redfish_url": "https://r",
        "proxmox_node": "pve1",
    }
    # Down and up again: every row byte-equal to what it was.
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0018")
    with engine.connect() as connection:
        assert _old_rows(connection) == before
    upgrade(engine)
    assert current_revision(engine) == head_revision()
