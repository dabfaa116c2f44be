"""The one safe path for any schema change: ``mko db upgrade`` and ``mko serve`` run
:func:`upgrade_database` (back up, upgrade through Alembic under a lock, verify,
restore the backup on any failure). It recognises mko's databases at every
revision, the earlier orchestrator's (the seed's) and foreign ones, which it refuses
untouched."""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from mko.platform.db.backup import backup_database, is_sqlite, restore_database, safe_url, sqlite_path
from mko.platform.db.migrate import alembic_config
from mko.platform.db.models.base import Base
from mko.platform.errors import BackupError, MigrationFailedError, MigrationRefusedError
from mko.platform.files import private_sqlite

__all__ = [
    "STEPS",
    "DatabaseKind",
    "DatabaseState",
    "MigrationReport",
    "backup_first",
    "inspect_database",
    "upgrade",
    "upgrade_database",
]

log = logging.getLogger("mko.db.legacy")


PRE_WOL_REVISION = "0001"
WOL_REVISION = "0002"


# What identifies the earlier orchestrator's tables.
LEGACY_NODE_COLUMNS = frozenset(
    {"id", "hostname", "ip_address", "ssh_user", "ssh_port", "ssh_key_path", "is_control_plane", "cluster_id"}
)
LEGACY_CLUSTER_COLUMNS = frozenset({"id", "name"})
LEGACY_PREFIX = "legacy_"  # SQLite: the earlier tables are renamed legacy_<name>
LEGACY_SCHEMA = "legacy"  # PostgreSQL: the earlier tables move to this schema


# Points after which --fail-after (a test hook) injects a failure: after the backup, after the schema
# change, after the defaults, and after the commit (so the restore from the backup has real work to do).
STEPS = ("backup", "schema", "defaults", "commit")


Progress = Callable[[str, str], None]


class DatabaseKind(enum.StrEnum):
    """What a database turned out to be."""

    EMPTY = "empty"
    MKO = "mko"
    LEGACY = "legacy"  # the earlier orchestrator's
    NEWER = "newer"  # mko's, at a revision this mko does not know
    FOREIGN = "foreign"


@dataclass
class DatabaseState:
    """The result of looking at a database without changing it."""

    kind: DatabaseKind
    tables: list[str]
    revision: str | None = None
    reason: str = ""


@dataclass
class MigrationReport:
    """What ``migrate_wol`` found and did (or, in a dry run, would do)."""

    database: str
    kind: str
    dry_run: bool = False
    changed: bool = False
    message: str = ""
    backup: str | None = None
    from_revision: str | None = None
    to_revision: str | None = None
    clusters: int = 0
    nodes: int = 0
    nodes_defaulted: int = 0
    macs_carried_over: int = 0
    macs_not_imported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kept_tables: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return asdict(self)


class _InjectedFailure(Exception):
    """Raised by the --fail-after test hook."""


def _no_progress(step: str, message: str) -> None:
    return None


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _head() -> str:
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - mko ships its migrations
        raise RuntimeError("mko has no migrations")
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in _script().walk_revisions()}


def _before_wol(revision: str) -> bool:
    """Whether a database at ``revision`` predates the Wake-on-LAN fields."""
    return WOL_REVISION not in {s.revision for s in _script().iterate_revisions(revision, "base")}


@contextlib.contextmanager
def _read_only(url: str) -> Iterator[Connection]:
    """A connection that cannot change the database (SQLite: opened read-only, journal mode untouched)."""
    if not is_sqlite(url):
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                yield connection
                connection.rollback()
        finally:
            engine.dispose()
        return
    path = sqlite_path(url).resolve()
    side_files = [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm")]
    existed = [side.exists() for side in side_files]

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()
        # A read-only connection to a WAL database leaves empty -wal/-shm files behind; they were not
        # there before, so they go.
        wal, shm = side_files
        if not existed[0] and wal.exists() and wal.stat().st_size == 0:
            wal.unlink()
            if not existed[1]:
                shm.unlink(missing_ok=True)


def inspect_database(url: str) -> DatabaseState:
    """Classify the database without changing it; a missing SQLite file is refused."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if not path.is_file():
            raise MigrationRefusedError(f"no database file at {path}")
        with path.open("rb") as handle:
            magic = handle.read(16)
        if magic and magic != b"SQLite format 3\x00":
            raise MigrationRefusedError(f"{path} is not a SQLite database; nothing was changed")
    try:
        with _read_only(url) as connection:
            return _classify(connection)
    except SQLAlchemyError as exc:
        raise MigrationRefusedError(f"cannot read {safe_url(url)}: {_reason(exc)}") from exc


def _classify(connection: Connection) -> DatabaseState:
    insp = inspect(connection)
    tables = sorted(insp.get_table_names())
    if not tables:
        return DatabaseState(DatabaseKind.EMPTY, tables)
    revision = None
    if "alembic_version" in tables:
        versions = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
        revision = versions[0] if len(versions) == 1 else None
    node_columns = {c["name"] for c in insp.get_columns("nodes")} if "nodes" in tables else set()
    cluster_columns = {c["name"] for c in insp.get_columns("clusters")} if "clusters" in tables else set()
    if revision is not None and revision in _known_revisions():
        return DatabaseState(DatabaseKind.MKO, tables, revision)
    legacy_shape = node_columns >= LEGACY_NODE_COLUMNS and cluster_columns >= LEGACY_CLUSTER_COLUMNS
    if legacy_shape and "role" not in node_columns:
        # The earlier orchestrator may have kept its own (Flask-Migrate) alembic_version: not mko's.
        return DatabaseState(DatabaseKind.LEGACY, tables, revision)
    if "role" in node_columns and revision is not None:
        return DatabaseState(
            DatabaseKind.NEWER,
            tables,
            revision,
            f"the database is at revision {revision}, which this mko does not know (written by a newer"
            " mko?); nothing was changed",
        )
    shown = ", ".join(tables[:8]) + (", …" if len(tables) > 8 else "")
    return DatabaseState(
        DatabaseKind.FOREIGN,
        tables,
        revision,
        f"not an orchestrator database: it has the tables {shown} but neither mko's schema nor the earlier"
        " orchestrator's nodes and clusters tables; nothing was changed",
    )


def _count(connection: Connection, table: str) -> int:
    query = text(f"SELECT count(*) FROM {_q(table)}")  # noqa: S608 - a quoted name from the catalogue
    return int(connection.execute(query).scalar_one())


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_sqlite_connection(connection: Connection) -> bool:
    """Whether the connection is to SQLite."""
    return connection.dialect.name == "sqlite"


def _migration_engine(url: str) -> Engine:
    """An engine whose transactions hold DDL too (SQLite: BEGIN IMMEDIATE, journal mode left alone)."""
    if not is_sqlite(url):
        return create_engine(url, poolclass=NullPool)
    private_sqlite(sqlite_path(url))  # created 0600 (an older mko's file is made 0600)
    engine = create_engine(url, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # NOTE: Python's sqlite3 runs DDL outside any transaction unless BEGIN was sent explicitly;
        # taking BEGIN over (below) makes the whole migration one transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # NOTE: Alembic's batch mode rebuilds a SQLite table (copy, DROP, rename); with foreign keys on,
        # the DROP would cascade into the rows that reference it (e.g. a node's schedules). SQLite's own
        # procedure for table rebuilds: keys off, then PRAGMA foreign_key_check before the commit.
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


MIGRATION_LOCK_KEY = 0x6D6B6F_4D494752  # "mko" + "MIGR": one upgrade at a time per PostgreSQL database


@contextlib.contextmanager
def _locked(url: str, tables: list[str], *, commit: bool = True) -> Iterator[Connection]:
    """One transaction that keeps every other writer out from before the backup until the commit."""
    engine = _migration_engine(url)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()  # SQLite: BEGIN IMMEDIATE takes the write lock
            try:
                if connection.dialect.name == "postgresql":
                    # Instances started together on one database take turns; the lock ends with us.
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
                if connection.dialect.name == "postgresql" and tables:
                    schema = inspect(connection).default_schema_name or "public"
                    names = ", ".join(f"{_q(schema)}.{_q(t)}" for t in tables)
                    # Readers (and pg_dump) go on; writers wait until this transaction ends.
                    connection.exec_driver_sql(f"LOCK TABLE {names} IN SHARE MODE")
                yield connection
                _check_foreign_keys(connection)
            except BaseException:
                transaction.rollback()
                raise
            if commit:
                transaction.commit()
            else:
                transaction.rollback()
    finally:
        engine.dispose()


def _check_foreign_keys(connection: Connection) -> None:
    if not _is_sqlite_connection(connection):
        return  # PostgreSQL checks foreign keys as it goes
    present = set(inspect(connection).get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name in present:
            broken = connection.exec_driver_sql(f"PRAGMA foreign_key_check({_q(table.name)})").first()
            if broken is not None:
                raise _VerifyError(f"table {table.name} has a row whose {broken[2]} reference is missing")


def _alembic(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _set_aside(connection: Connection, tables: list[str]) -> None:
    """Move the earlier orchestrator's tables out of the way of mko's, keeping them and their data."""
    if _is_sqlite_connection(connection):
        for table in tables:
            connection.exec_driver_sql(f"ALTER TABLE {_q(table)} RENAME TO {_q(LEGACY_PREFIX + table)}")
        # Index names are global in SQLite and the old ones (ix_nodes_cluster_id, …) would clash with
        # mko's: re-create each under a legacy_ name.
        renamed = [LEGACY_PREFIX + t for t in tables]
        marks = ", ".join(f":t{i}" for i in range(len(renamed)))
        query = (
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"  # noqa: S608
            f" AND tbl_name IN ({marks})"
        )
        rows = connection.execute(text(query), {f"t{i}": name for i, name in enumerate(renamed)}).all()
        for name, sql in rows:
            match = _INDEX_NAME.match(sql)
            if match is None:
                raise MigrationFailedError(f"cannot rename index {name!r} of the earlier orchestrator")
            connection.exec_driver_sql(f"DROP INDEX {_q(name)}")
            connection.exec_driver_sql(match.group(1) + _q(LEGACY_PREFIX + name) + sql[match.end() :])
        return
    schema = inspect(connection).default_schema_name or "public"
    connection.exec_driver_sql(f"CREATE SCHEMA {_q(LEGACY_SCHEMA)}")
    for table in tables:
        # Indexes, constraints and owned sequences move along, so none clashes with mko's.
        connection.exec_driver_sql(f"ALTER TABLE {_q(schema)}.{_q(table)} SET SCHEMA {_q(LEGACY_SCHEMA)}")


_INDEX_NAME = re.compile(
    r'^(\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?)(?:"(?:[^"]|"")*"|\[[^\]]*\]|`[^`]*`|[^\s(]+)',
    re.IGNORECASE,
)


def _inject(fail_after: str | None, step: str) -> None:
    if fail_after == step:
        raise _InjectedFailure(f"failure injected after step {step!r} (--fail-after)")


class _VerifyError(Exception):
    """The migrated database is not what it should be."""


def _recover(url: str, backup_path: Path | None, exc: BaseException) -> None:
    """Put the backup back after a failed migration and raise MigrationFailedError with the reason."""
    reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else _reason(exc)
    log.error("migration of %s failed: %s", safe_url(url), reason)
    # Ctrl-C is reported like any failure; other exits (SystemExit, …) pass through after the restore.
    reportable = isinstance(exc, Exception | KeyboardInterrupt)
    if backup_path is None:
        if reportable:
            raise MigrationFailedError(
                f"migration failed: {reason}; no backup was taken (--no-backup), so nothing was restored"
            ) from exc
        return
    try:
        restore_database(url, backup_path)
    except (BackupError, OSError) as restore_exc:
        raise MigrationFailedError(
            f"migration failed: {reason}; restoring the backup failed too ({_reason(restore_exc)}):"
            f" the backup is intact at {backup_path}"
        ) from exc
    log.info("restored %s from %s", safe_url(url), backup_path)
    if reportable:
        raise MigrationFailedError(
            f"migration failed: {reason}; the database was restored from the backup {backup_path}"
        ) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        exc = orig if isinstance(orig, BaseException) else exc
    return " ".join(str(exc).split()) or type(exc).__name__


def _state_before_upgrade(url: str) -> DatabaseState:
    if is_sqlite(url):
        path = sqlite_path(url)
        if not path.exists():
            return DatabaseState(DatabaseKind.EMPTY, [])
        private_sqlite(path)  # an older mko left it (and its backups) readable by everyone
    return inspect_database(url)


def upgrade_database(
    url: str,
    revision: str = "head",
    *,
    backup: bool = True,
    backup_dir: Path | None = None,
    progress: Progress = _no_progress,
) -> tuple[str | None, str | None, Path | None]:
    """``mko db upgrade``: back up an existing mko database, upgrade it, restore it on failure.

    Returns (revision before, revision after, backup path). A new or empty database is created without
    a backup; the earlier orchestrator's database and foreign ones are refused.
    """
    state = _state_before_upgrade(url)
    if state.kind is DatabaseKind.LEGACY:
        raise MigrationRefusedError(
            "this is the earlier orchestrator's database: import it with `mko db migrate-wol`"
            " (or python scripts/migrate_wake_on_lan_fields.py); nothing was changed"
        )
    if state.kind in (DatabaseKind.FOREIGN, DatabaseKind.NEWER):
        raise MigrationRefusedError(state.reason)
    target = _head() if revision == "head" else revision
    if state.kind is DatabaseKind.MKO and state.revision == target:
        return state.revision, state.revision, None
    backup_path: Path | None = None
    changing = False
    try:
        with _locked(url, state.tables) as connection:
            if MigrationContext.configure(connection).get_current_revision() == target:
                # Another instance (`mko serve` on the same PostgreSQL) upgraded it while we waited.
                return target, target, None
            counts = {t: _count(connection, t) for t in state.tables if t != "alembic_version"}
            if backup and state.kind is DatabaseKind.MKO:
                backup_path = backup_first(url, backup_dir)
                progress("backup", str(backup_path))
            changing = True
            _alembic(connection, revision)
            after = MigrationContext.configure(connection).get_current_revision()
            present = set(inspect(connection).get_table_names())
            for table, expected in counts.items():
                # A table a revision dropped on purpose is gone; one that lost rows is a failure.
                if table in present and (actual := _count(connection, table)) != expected:
                    raise _VerifyError(f"table {table} has {actual} row(s) where it had {expected}")
    except BaseException as exc:
        if not changing or state.kind is not DatabaseKind.MKO:
            raise
        _recover(url, backup_path, exc)
        raise
    if after == state.revision and backup_path is not None:
        backup_path.unlink(missing_ok=True)  # nothing changed: the copy protects nothing
        backup_path = None
    return state.revision, after, backup_path


def backup_first(url: str, backup_dir: Path | None) -> Path:
    """The backup taken before a change; one that cannot be taken refuses the change, which has not
    begun (MigrationRefusedError: exit 2, nothing touched), instead of failing it."""
    try:
        return backup_database(url, backup_dir)
    except BackupError as exc:
        raise MigrationRefusedError(str(exc)) from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest) without a backup.

    Goes through the one safe upgrade path (:func:`upgrade_database`): one locked
    transaction, SQLite foreign keys off while batch mode rebuilds tables (else a rebuild cascades
    deletes), checked before the commit; the earlier orchestrator's database is refused, not mangled.
    """
    upgrade_database(engine.url.render_as_string(hide_password=False), revision, backup=False)
