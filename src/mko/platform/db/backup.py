"""Backups taken before a schema change, and restoring them when the change fails.

SQLite: the online backup API copies the database consistently even while ``mko serve`` writes to it,
into a timestamped file beside the database. PostgreSQL: ``pg_dump`` (plain SQL, restorable with
``psql``); without it no backup can be made and callers refuse unless told ``--no-backup``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from mko.platform.errors import BackupError
from mko.platform.files import touch_private

__all__ = [
    "backup_database",
    "check_backup_possible",
    "is_sqlite",
    "restore_database",
    "safe_url",
    "sqlite_path",
]

# The 100-byte file header: the backup API copies every page verbatim but gives the copy its own change
# counter, schema cookie and version-valid-for; putting the source's header back makes the backup a
# byte-for-byte image of the database, so restoring it restores the original file exactly.
_HEADER_SIZE = 100
_BUSY_TIMEOUT = 10.0  # seconds to wait for a writer's lock (rollback-journal databases)
_SIDE_FILES = ("-wal", "-shm", "-journal")
_PG_TOOLS = ("pg_dump", "psql")
_PG_TIMEOUT = 600.0


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL (relative paths are relative to the working directory)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError(f"{safe_url(url)} is not a SQLite database file")
    return Path(database)


def check_backup_possible(url: str) -> None:
    """Raise BackupError, saying why, when no backup of this database can be taken here."""
    if is_sqlite(url):
        return
    if make_url(url).get_backend_name() != "postgresql":
        raise BackupError(f"mko cannot back up {make_url(url).get_backend_name()} databases")
    missing = [tool for tool in _PG_TOOLS if shutil.which(tool) is None]
    if missing:
        raise BackupError(
            f"cannot back up the PostgreSQL database: {' and '.join(missing)} not found"
            " (install the postgresql-client package), or use --no-backup"
        )


def backup_database(url: str, directory: Path | None = None) -> Path:
    """Copy the database to a new timestamped file and return its path."""
    check_backup_possible(url)
    if is_sqlite(url):
        source = sqlite_path(url)
        target = _unique(directory or source.parent, source.name, "")
        backup_sqlite(source, target)
        return target
    parsed = make_url(url)
    target = _unique(directory or Path("data/backups"), parsed.database or "postgres", ".sql")
    _pg_dump(parsed, target)
    return target


def restore_database(url: str, backup: Path) -> None:
    """Make the database exactly what ``backup`` holds again. No connection may be open on it."""
    if is_sqlite(url):
        _restore_sqlite(sqlite_path(url), backup)
    else:
        _restore_postgres(make_url(url), backup)


# ---------------------------------------------------------------- SQLite


def backup_sqlite(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through the online backup API, as one consistent snapshot."""
    if not source.is_file():
        raise BackupError(f"no database file at {source}")
    touch_private(target)  # 0600 before a byte is written: it holds everything the database holds
    src = sqlite3.connect(source, isolation_level=None, timeout=_BUSY_TIMEOUT)
    try:
        wal = src.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        wal_file = Path(f"{source}-wal")
        if wal and wal_file.exists() and wal_file.stat().st_size > 0:
            # Fold committed WAL frames into the file so its first page is the live one. Best effort and
            # brief: a busy server may keep frames in the WAL, and then the copy is consistent but keeps
            # its own header (below).
            src.execute("PRAGMA busy_timeout=200")
            src.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            src.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}")
        # A read transaction: writers cannot change what we copy (rollback journal) or fold newer
        # frames into the file under us (WAL) until we are done.
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        header = None
        # Checked after the snapshot is taken: an empty WAL now means the snapshot is the file itself,
        # and no checkpoint can change the file while we read from it.
        if not wal or not wal_file.exists() or wal_file.stat().st_size == 0:
            with source.open("rb") as handle:
                header = handle.read(_HEADER_SIZE)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
        src.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        raise BackupError(f"cannot back up {source}: {exc}") from exc
    finally:
        src.close()
    if header is not None and len(header) == _HEADER_SIZE:
        with target.open("r+b") as handle:
            handle.write(header)
    _check_copy(target)


def _check_copy(target: Path) -> None:
    """The copy must open and pass SQLite's own consistency check."""
    copy = sqlite3.connect(target)
    try:
        result = copy.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        result = str(exc)
    finally:
        copy.close()
    if result != "ok":
        target.unlink(missing_ok=True)
        raise BackupError(f"the backup of the database failed its consistency check: {result}")


def _restore_sqlite(database: Path, backup: Path) -> None:
    if not backup.is_file():
        raise BackupError(f"backup {backup} is missing: the database was not restored")
    # The write-ahead log, shared memory and journal belong to the failed attempt; left beside the
    # restored file they would be replayed onto it.
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{database}{suffix}").unlink()
    staging = database.with_name(f".{database.name}.restoring")
    staging.unlink(missing_ok=True)
    touch_private(staging)
    shutil.copyfile(backup, staging)
    if database.exists():
        stat = database.stat()
        with contextlib.suppress(PermissionError):
            os.chown(staging, stat.st_uid, stat.st_gid)
    with staging.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(staging, database)


# ---------------------------------------------------------------- PostgreSQL


def _libpq(url: URL) -> tuple[list[str], dict[str, str]]:
    """Connection options for the PostgreSQL tools; the password goes in the environment, not argv."""
    import psycopg.conninfo

    params: dict[str, str] = {}
    for key, value in url.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = str(url.port)
    if url.username:
        params["user"] = url.username
    params["dbname"] = url.database or "postgres"
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    return [f"--dbname={psycopg.conninfo.make_conninfo(**params)}"], env


def _pg_dump(url: URL, target: Path) -> None:
    touch_private(target)  # pg_dump keeps the mode of a file that exists
    args, env = _libpq(url)
    # --clean/--if-exists: the dump drops what it recreates, so restoring onto the same database works.
    command = ["pg_dump", "--format=plain", "--clean", "--if-exists", f"--file={target}", *args]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=_PG_TIMEOUT, check=False
    )
    if result.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        raise BackupError(f"pg_dump failed: {' '.join(result.stderr.split())}")
    target.chmod(0o600)  # a dump holds every stored secret, encrypted or not


# Everything the failed attempt may have created: tables, views and sequences in any user schema, and
# schemas other than public. The dump then recreates what was there (its own DROP … IF EXISTS included).
_PG_WIPE = """
DO $mko$
DECLARE r record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n
           WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('information_schema', 'public') LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') LOOP
    EXECUTE format(CASE WHEN r.relkind = 'v' THEN 'DROP VIEW IF EXISTS public.%I CASCADE'
                        WHEN r.relkind = 'm' THEN 'DROP MATERIALIZED VIEW IF EXISTS public.%I CASCADE'
                        WHEN r.relkind = 'f' THEN 'DROP FOREIGN TABLE IF EXISTS public.%I CASCADE'
                        ELSE 'DROP TABLE IF EXISTS public.%I CASCADE' END, r.relname);
  END LOOP;
  FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'S' LOOP
    EXECUTE format('DROP SEQUENCE IF EXISTS public.%I CASCADE', r.relname);
  END LOOP;
END
$mko$;
"""


def _restore_postgres(url: URL, backup: Path) -> None:
    if not backup.is_file():
        raise BackupError(f"backup {backup} is missing: the database was not restored")
    args, env = _libpq(url)
    script = _PG_WIPE + backup.read_text(encoding="utf-8")
    # One transaction: the database is either wholly restored or left as it was.
    command = ["psql", "--no-psqlrc", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1", *args]
    result = subprocess.run(
        command, input=script, env=env, capture_output=True, text=True, timeout=_PG_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise BackupError(f"restoring {backup} failed: {' '.join(result.stderr.split())}")


# ---------------------------------------------------------------- names


def _unique(directory: Path, name: str, suffix: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = directory / f"{name}.backup-{stamp}{suffix}"
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = directory / f"{name}.backup-{stamp}-{counter}{suffix}"
    return candidate
