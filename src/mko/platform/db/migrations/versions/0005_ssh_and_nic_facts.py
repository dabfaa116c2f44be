"""SSH and NIC facts: the node's own interface and its NIC-reported Wake-on state (issue 6).

SSH host keys are not stored here: they live in the orchestrator's known_hosts file, which OpenSSH
(and so Ansible) reads too.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (
    ("nic_interface", sa.String(length=15)),
    ("nic_interfaces", sa.JSON()),
    ("nic_collected_at", sa.DateTime(timezone=True)),
    ("nic_wol_supported", sa.String(length=16)),
    ("nic_wol_state", sa.String(length=16)),
    ("nic_wol_persistence", sa.String(length=32)),
    ("nic_checked_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
