"""Indexes on every foreign key and list filter, so lists and the last wake per node stay fast at
10,000 nodes (issue 23).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# (index name, table, columns): the same names as the models' ``index_…`` declarations.
INDEXES = (
    ("ix_operation_steps_node_id", "operation_steps", ["node_id", "id"]),
    ("ix_operations_target", "operations", ["target_type", "target_id"]),
    ("ix_operations_actor", "operations", ["actor"]),
    ("ix_ups_events_ups_time", "ups_events", ["ups_id", "occurred_at"]),
    ("ix_nodes_proxmox_host_id", "nodes", ["proxmox_host_id"]),
    ("ix_nodes_role", "nodes", ["role"]),
    ("ix_nodes_reachable", "nodes", ["reachable"]),
    ("ix_nodes_site", "nodes", ["site"]),
    ("ix_api_tokens_user_id", "api_tokens", ["user_id"]),
    ("ix_agents_token_id", "agents", ["token_id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
