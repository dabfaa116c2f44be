"""Power drivers: BMC settings and encrypted secrets (issue 7).

Nodes get the Proxmox node name, IPMI/Redfish BMC address, port, user, encrypted password, Redfish URL
and system id, and TLS options. Proxmox hosts already had their columns (secret encrypted at rest).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (
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


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("proxmox_node", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("bmc_address", sa.String(length=253), nullable=True))
        batch.add_column(sa.Column("bmc_port", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("bmc_username", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("bmc_password_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("redfish_url", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("redfish_system_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("bmc_verify_tls", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("bmc_ca_file", sa.String(length=500), nullable=True))
    # The default filled existing rows; the model supplies it for new rows from here on.
    with op.batch_alter_table("nodes") as batch:
        batch.alter_column("bmc_verify_tls", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
