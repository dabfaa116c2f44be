"""Kubernetes-aware shutdown (issue 21): per-cluster options and the replicas a shutdown scaled to zero.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("k8s", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("clusters") as batch:
        batch.alter_column("k8s", server_default=None)
    op.create_table(
        "scaled_workloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("operation_id", sa.Integer(), nullable=True),
        sa.Column("scaled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_scaled_workloads_cluster_id"), "scaled_workloads", ["cluster_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_scaled_workloads_cluster_id"), table_name="scaled_workloads")
    op.drop_table("scaled_workloads")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("k8s")
