"""Several UPSes (issue 20): which UPSes feed each node (``node_feeds``), and rules that act only on the
nodes their UPS feeds (``power_rules.target``).

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_feeds",
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("ups_id", sa.Integer(), sa.ForeignKey("ups.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_node_feeds_ups_id", "node_feeds", ["ups_id"])
    with op.batch_alter_table("power_rules") as batch:
        batch.add_column(sa.Column("target", sa.String(16), nullable=False, server_default="cluster"))


def downgrade() -> None:
    with op.batch_alter_table("power_rules") as batch:
        batch.drop_column("target")
    op.drop_index("ix_node_feeds_ups_id", table_name="node_feeds")
    op.drop_table("node_feeds")
