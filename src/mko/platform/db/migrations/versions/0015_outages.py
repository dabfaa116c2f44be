"""Outages that survive restarts, the UPS power cycle, and restore rules that wait for charge (issue 18).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

PHASES = ("shutting_down", "down", "restoring", "restored", "restore_failed", "closed")


def upgrade() -> None:
    op.create_table(
        "outages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ups_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column(
            "phase", sa.Enum(*PHASES, name="outage_phase", native_enum=False, length=32), nullable=False
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("nodes_up", sa.JSON(), nullable=False),
        sa.Column("nodes_off", sa.JSON(), nullable=False),
        sa.Column("shutdown_operation_id", sa.Integer(), nullable=True),
        sa.Column("restore_operation_id", sa.Integer(), nullable=True),
        sa.Column("power_cycle", sa.JSON(), nullable=False),
        sa.Column("host_shutdown", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ups_id"], ["ups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_outages_cluster_id"), "outages", ["cluster_id"], unique=False)
    op.create_index(op.f("ix_outages_closed_at"), "outages", ["closed_at"], unique=False)
    op.create_index(op.f("ix_outages_phase"), "outages", ["phase"], unique=False)
    op.create_index(op.f("ix_outages_ups_id"), "outages", ["ups_id"], unique=False)
    with op.batch_alter_table("ups") as batch:
        batch.add_column(sa.Column("power_cycle", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("power_rules") as batch:
        batch.add_column(sa.Column("min_charge", sa.Integer(), nullable=True))
        # Rules made before this revision keep acting at once (0); new ones get the documented default.
        batch.add_column(sa.Column("stable_for", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("ups") as batch:
        batch.alter_column("power_cycle", server_default=None)
    with op.batch_alter_table("power_rules") as batch:
        batch.alter_column("stable_for", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("power_rules") as batch:
        batch.drop_column("stable_for")
        batch.drop_column("min_charge")
    with op.batch_alter_table("ups") as batch:
        batch.drop_column("power_cycle")
    op.drop_index(op.f("ix_outages_ups_id"), table_name="outages")
    op.drop_index(op.f("ix_outages_phase"), table_name="outages")
    op.drop_index(op.f("ix_outages_closed_at"), table_name="outages")
    op.drop_index(op.f("ix_outages_cluster_id"), table_name="outages")
    op.drop_table("outages")
