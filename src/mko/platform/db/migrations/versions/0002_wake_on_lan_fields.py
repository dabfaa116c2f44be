"""Wake-on-LAN fields on nodes (the seed's eight, plus interface, SecureOn, prefix, probe port).

Existing nodes get the seed's defaults: WoL disabled, method ethernet, port 9, physical.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WOL_METHODS = ("ethernet", "ethernet-raw", "proxmox", "ipmi", "redfish")


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("wol_enabled", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("wol_mac_address", sa.String(length=17), nullable=True))
        batch.add_column(
            sa.Column(
                "wol_method",
                sa.Enum(*WOL_METHODS, name="wol_method", native_enum=False, length=32),
                nullable=False,
                server_default="ethernet",
            )
        )
        batch.add_column(sa.Column("wol_port", sa.Integer(), nullable=False, server_default="9"))
        batch.add_column(sa.Column("wol_broadcast_address", sa.String(length=45), nullable=True))
        batch.add_column(
            sa.Column("is_virtual_node", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("proxmox_vm_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("proxmox_host_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("wol_interface", sa.String(length=15), nullable=True))
        batch.add_column(sa.Column("wol_secureon", sa.String(length=17), nullable=True))
        batch.add_column(sa.Column("wol_prefix_len", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("probe_port", sa.Integer(), nullable=True))
        batch.create_unique_constraint("uq_nodes_wol_mac_address", ["wol_mac_address"])
        batch.create_foreign_key(
            "fk_nodes_proxmox_host_id", "proxmox_hosts", ["proxmox_host_id"], ["id"], ondelete="SET NULL"
        )
    # The defaults above filled existing rows; the model supplies them for new rows from here on.
    with op.batch_alter_table("nodes") as batch:
        for column in ("wol_enabled", "wol_method", "wol_port", "is_virtual_node"):
            batch.alter_column(column, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_constraint("fk_nodes_proxmox_host_id", type_="foreignkey")
        batch.drop_constraint("uq_nodes_wol_mac_address", type_="unique")
        for column in (
            "probe_port",
            "wol_prefix_len",
            "wol_secureon",
            "wol_interface",
            "proxmox_host_id",
            "proxmox_vm_id",
            "is_virtual_node",
            "wol_broadcast_address",
            "wol_port",
            "wol_method",
            "wol_mac_address",
            "wol_enabled",
        ):
            batch.drop_column(column)
