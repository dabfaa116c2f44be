"""What every domain stands on: the one Settings (prefix ``MKO_``), the error tree, logs, secrets at
rest, private files, the validation layer for strings that reach a sink, and the database (engine,
sessions, tables, Alembic migrations, safe upgrade, backups). It imports nothing above it."""
