"""Operation owners: the process running each operation (host, pid, start time) and its heartbeat.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-07

Operations open when this revision is applied keep empty owner columns: mko.operations.ownership judges those
by how long they have been silent (heartbeat, else start) instead of by their process.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("owner_host", sa.String(length=253), nullable=True))
        batch.add_column(sa.Column("owner_pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("owner_start", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("owner_start")
        batch.drop_column("owner_pid")
        batch.drop_column("owner_host")
