"""Power order (issue 20): which nodes depend on which (``node_dependencies``), and a cluster's stagger
between power-ons (``clusters.power_stagger``).

Revision ID: 0019
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_dependencies",
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "depends_on_id", sa.Integer(), sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    op.create_index("ix_node_dependencies_depends_on_id", "node_dependencies", ["depends_on_id"])
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("power_stagger", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("power_stagger")
    op.drop_index("ix_node_dependencies_depends_on_id", table_name="node_dependencies")
    op.drop_table("node_dependencies")
