"""The database: engine and sessions, the tables (:mod:`mko.platform.db.models`), Alembic migrations,
the safe upgrade of any schema change and backups."""
