"""Alembic environment: the connection comes from mko (``mko db upgrade``), never from an ini file."""

from alembic import context

from mko.platform.db.models.base import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - mko always passes a connection
    raise RuntimeError("run migrations through `mko db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table instead
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
