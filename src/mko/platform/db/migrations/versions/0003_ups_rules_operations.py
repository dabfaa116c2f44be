"""UPS inventory, power rules, and operations with their steps.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

POWER_EVENTS = (
    "power_loss",
    "power_restored",
    "low_battery",
    "critical_battery",
    "ups_shutdown",
    "comm_lost",
    "comm_restored",
)
CLUSTER_ACTIONS = ("wake_on_lan", "graceful_shutdown", "force_shutdown")
STATUSES = ("pending", "running", "succeeded", "partial", "failed", "cancelled")


def _status() -> sa.Enum:
    return sa.Enum(*STATUSES, name="operation_status", native_enum=False, length=32)


def upgrade() -> None:
    op.create_table(
        "ups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("ups_name", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=True),
        sa.Column("password_encrypted", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("host", "port", "ups_name", name="uq_ups_device"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "power_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("ups_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column(
            "power_event",
            sa.Enum(*POWER_EVENTS, name="power_event", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column(
            "cluster_action",
            sa.Enum(*CLUSTER_ACTIONS, name="cluster_action", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("battery_threshold", sa.Integer(), nullable=True),
        sa.Column("action_delay", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("execution_count", sa.Integer(), nullable=False),
        sa.Column("success_count", sa.Integer(), nullable=False),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("last_triggered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ups_id"], ["ups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_power_rules_cluster_id"), "power_rules", ["cluster_id"], unique=False)
    op.create_index(op.f("ix_power_rules_ups_id"), "power_rules", ["ups_id"], unique=False)
    op.create_table(
        "operations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("target_type", sa.String(length=20), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_operations_kind"), "operations", ["kind"], unique=False)
    op.create_index(op.f("ix_operations_status"), "operations", ["status"], unique=False)
    op.create_table(
        "operation_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operation_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["operation_id"], ["operations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_operation_steps_operation_id"), "operation_steps", ["operation_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("operation_steps")
    op.drop_table("operations")
    op.drop_table("power_rules")
    op.drop_table("ups")
