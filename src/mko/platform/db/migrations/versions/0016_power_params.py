"""Power drivers as plugins: a node's driver settings move into one JSON column, ``power_params``.

The seed's eight WoL fields stay columns (the seed's API, CLI and migration script name them; the MAC is
unique and the Proxmox host a foreign key). The thirteen other power columns fold into
``power_params`` under their API names, every non-empty value of every method (switching back to IPMI
keeps the BMC settings). Encrypted secrets are copied as ciphertext (``{"fernet": token}``): the
migration needs no key. ``bmc_verify_tls`` is stored only when false (absent means the default, true).
``wol_method`` becomes a plain VARCHAR(32), which it already was in the database: a method a newer mko
adds is read by an older one as a name rather than refused by an enum.

Downgrading unfolds the values into their columns again.

Revision ID: 0016
Revises: 0018
Create Date: 2026-12-07
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0018"
branch_labels = None
depends_on = None

#: Folded column → key in power_params (secrets keep their ciphertext under the field's API name).
FOLDED = {
    "wol_interface": "wol_interface",
    "wol_prefix_len": "wol_prefix_len",
    "wol_secureon_encrypted": "wol_secureon",
    "proxmox_node": "proxmox_node",
    "bmc_address": "bmc_address",
    "bmc_port": "bmc_port",
    "bmc_username": "bmc_username",
    "bmc_password_encrypted": "bmc_password",
    "redfish_url": "redfish_url",
    "redfish_system_id": "redfish_system_id",
    "bmc_verify_tls": "bmc_verify_tls",
    "bmc_ca_file": "bmc_ca_file",
}
SECRETS = {"wol_secureon_encrypted", "bmc_password_encrypted"}
TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "wol_interface": sa.String(length=15),
    "wol_prefix_len": sa.Integer(),
    "wol_secureon_encrypted": sa.Text(),
    "proxmox_node": sa.String(length=100),
    "bmc_address": sa.String(length=253),
    "bmc_port": sa.Integer(),
    "bmc_username": sa.String(length=100),
    "bmc_password_encrypted": sa.Text(),
    "redfish_url": sa.String(length=500),
    "redfish_system_id": sa.String(length=200),
    "bmc_verify_tls": sa.Boolean(),
    "bmc_ca_file": sa.String(length=500),
}
METHODS = ("ethernet", "ethernet-raw", "proxmox", "ipmi", "redfish")
BATCH = 500


def _folded(row: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for column, key in FOLDED.items():
        value = getattr(row, column)
        if column == "bmc_verify_tls":
            if value is not None and not value:
                params[key] = False
        elif value is not None:
            params[key] = {"fernet": value} if column in SECRETS else value
    return params


def _unfolded(params: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column, key in FOLDED.items():
        value = params.get(key)
        if column in SECRETS:
            value = value.get("fernet") if isinstance(value, dict) else None
        elif column == "bmc_verify_tls":
            value = value is not False
        values[column] = value
    return values


def _each_batch(bind: sa.Connection, query: sa.Select[Any]) -> Any:
    last = 0
    while rows := bind.execute(query.where(sa.column("id") > last).order_by("id").limit(BATCH)).all():
        yield rows
        last = rows[-1].id


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("power_params", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
    nodes = sa.table("nodes", sa.column("id"), sa.column("power_params", sa.JSON()), *map(sa.column, FOLDED))
    for rows in _each_batch(bind, sa.select(nodes.c.id, *(nodes.c[c] for c in FOLDED))):
        for row in rows:
            params = _folded(row)
            if params:
                bind.execute(sa.update(nodes).where(nodes.c.id == row.id).values(power_params=params))
    with op.batch_alter_table("nodes") as batch:
        for column in FOLDED:
            batch.drop_column(column)
        batch.alter_column(
            "wol_method",
            existing_type=sa.Enum(*METHODS, name="wol_method", native_enum=False, length=32),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
        batch.alter_column("power_params", server_default=None)


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("nodes") as batch:
        for column, kind in TYPES.items():
            if column == "bmc_verify_tls":
                batch.add_column(sa.Column(column, kind, nullable=False, server_default=sa.true()))
            else:
                batch.add_column(sa.Column(column, kind, nullable=True))
    nodes = sa.table("nodes", sa.column("id"), sa.column("power_params", sa.JSON()), *map(sa.column, FOLDED))
    for rows in _each_batch(bind, sa.select(nodes.c.id, nodes.c.power_params)):
        for row in rows:
            bind.execute(
                sa.update(nodes).where(nodes.c.id == row.id).values(_unfolded(row.power_params or {}))
            )
    with op.batch_alter_table("nodes") as batch:
        batch.alter_column("bmc_verify_tls", server_default=None)
        batch.drop_column("power_params")
        batch.alter_column(
            "wol_method",
            existing_type=sa.String(length=32),
            type_=sa.Enum(*METHODS, name="wol_method", native_enum=False, length=32),
            existing_nullable=False,
        )
