"""Schedules, notification settings on rules, and node reachability (issue 11).

Existing rules get notify_on_failure on and the other two flags off; without an apprise URL configured
(globally or on the rule) nothing is sent, so upgrading changes nothing until URLs are set.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATUSES = ("pending", "running", "succeeded", "partial", "failed", "cancelled")
SCHEDULE_ACTIONS = ("wake", "shutdown")
NODE_COLUMNS = (
    ("reachable", sa.Boolean()),
    ("reachability_checked_at", sa.DateTime(timezone=True)),
    ("reachability_changed_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for name, type_ in NODE_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("power_rules") as batch:
        batch.add_column(
            sa.Column("notify_on_trigger", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("notify_on_completion", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("notify_on_failure", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("notify_urls_encrypted", sa.Text(), nullable=True))
    # The defaults above filled existing rows; the model supplies them for new rows from here on.
    with op.batch_alter_table("power_rules") as batch:
        for column in ("notify_on_trigger", "notify_on_completion", "notify_on_failure"):
            batch.alter_column(column, server_default=None)
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "action",
            sa.Enum(*SCHEDULE_ACTIONS, name="schedule_action", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("cluster_id", sa.Integer(), nullable=True),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(length=120), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("notify_urls_encrypted", sa.Text(), nullable=True),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_operation_id", sa.Integer(), nullable=True),
        sa.Column(
            "last_status",
            sa.Enum(*STATUSES, name="operation_status", native_enum=False, length=32),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index(op.f("ix_schedules_cluster_id"), "schedules", ["cluster_id"], unique=False)
    op.create_index(op.f("ix_schedules_node_id"), "schedules", ["node_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_schedules_node_id"), table_name="schedules")
    op.drop_index(op.f("ix_schedules_cluster_id"), table_name="schedules")
    op.drop_table("schedules")
    with op.batch_alter_table("power_rules") as batch:
        for column in (
            "notify_urls_encrypted",
            "notify_on_failure",
            "notify_on_completion",
            "notify_on_trigger",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("nodes") as batch:
        for name, _ in reversed(NODE_COLUMNS):
            batch.drop_column(name)
