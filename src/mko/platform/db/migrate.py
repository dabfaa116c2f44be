"""Schema migrations through Alembic, driven from Python (``mko db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    """An Alembic config pointing at mko's migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest) without a backup.

    Goes through the one safe upgrade path (``mko.platform.db.upgrade.upgrade_database``): one locked
    transaction, SQLite foreign keys off while batch mode rebuilds tables (else a rebuild cascades
    deletes), checked before the commit; the earlier orchestrator's database is refused, not mangled.
    """
    from mko.platform.db.upgrade import upgrade_database

    upgrade_database(engine.url.render_as_string(hide_password=False), revision, backup=False)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this mko."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
