"""High availability: serve instances, operation owners, handled UPS events, persisted UPS state (issue 13).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_leader", sa.Boolean(), nullable=False),
        sa.Column("leader_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "ups_state",
        sa.Column("ups_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=100), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["ups_id"], ["ups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ups_id"),
    )
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("instance", sa.String(length=200), nullable=True))
        batch.create_index(batch.f("ix_operations_instance"), ["instance"], unique=False)
    with op.batch_alter_table("ups_events") as batch:
        batch.add_column(sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("handled_by", sa.String(length=200), nullable=True))
    # Events stored before this revision were handed to the rules when they happened: never replay them.
    op.execute("UPDATE ups_events SET handled_at = occurred_at WHERE handled_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("ups_events") as batch:
        batch.drop_column("handled_by")
        batch.drop_column("handled_at")
    with op.batch_alter_table("operations") as batch:
        batch.drop_index(batch.f("ix_operations_instance"))
        batch.drop_column("instance")
    op.drop_table("ups_state")
    op.drop_table("instances")
