"""UPS monitoring: the event log of every power event detected on a UPS (issue 4).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
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


def upgrade() -> None:
    op.create_table(
        "ups_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ups_id", sa.Integer(), nullable=False),
        sa.Column(
            "event",
            sa.Enum(*POWER_EVENTS, name="power_event", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_before", sa.String(length=100), nullable=True),
        sa.Column("status_after", sa.String(length=100), nullable=True),
        sa.Column("battery_charge", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["ups_id"], ["ups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ups_events_ups_id"), "ups_events", ["ups_id"], unique=False)
    op.create_index(op.f("ix_ups_events_occurred_at"), "ups_events", ["occurred_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_ups_events_occurred_at"), table_name="ups_events")
    op.drop_index(op.f("ix_ups_events_ups_id"), table_name="ups_events")
    op.drop_table("ups_events")
