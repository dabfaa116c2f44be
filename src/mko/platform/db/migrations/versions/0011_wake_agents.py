"""Wake agents: sites of clusters and nodes, the agents, and the wake jobs queued for them (issue 13).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JOB_STATUSES = ("queued", "claimed", "done", "failed")


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("site", sa.String(length=64), nullable=True))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("site", sa.String(length=64), nullable=True))
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index(op.f("ix_agents_site"), "agents", ["site"], unique=False)
    op.create_table(
        "wake_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("operation_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(*JOB_STATUSES, name="wake_job_status", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("node_ids", sa.JSON(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["operation_id"], ["operations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_wake_jobs_operation_id"), "wake_jobs", ["operation_id"], unique=False)
    op.create_index(op.f("ix_wake_jobs_site"), "wake_jobs", ["site"], unique=False)
    op.create_index(op.f("ix_wake_jobs_status"), "wake_jobs", ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("wake_jobs")
    op.drop_table("agents")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("site")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("site")
