"""The schema revision this mko needs, and the one a database is at, without importing Alembic.

Every CLI command checks the database's revision before it opens a session; reading one row with
SQLAlchemy core keeps Alembic (and Mako) out of the command line's start-up. A new migration changes
:data:`HEAD` too: ``tests/unit/platform/test_migrations.py`` fails until it equals Alembic's head.
"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

__all__ = ["HEAD", "database_revision"]

HEAD = "0019"


def database_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database no migration has touched yet."""
    with engine.connect() as connection:
        try:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):  # no alembic_version table: a new database
            return None
