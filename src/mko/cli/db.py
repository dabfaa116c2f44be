"""`mko db …`: the schema upgrade, the current revision, and `mko db migrate-wol` (also the seed's
`python scripts/migrate_wake_on_lan_fields.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mko.cli.common import console
from mko.inventory.seed_import import migrate_wol
from mko.platform.db.migrate import current_revision, head_revision
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade_database
from mko.platform.logs import configure_logging
from mko.platform.settings import get_settings

__all__ = ["database_url", "migrate_wol_command", "print_step", "print_upgrade_step"]

_STEP_LABELS = {
    "found": "database",
    "backup": "1/4 backup",
    "schema": "2/4 schema",
    "defaults": "3/4 defaults",
    "verify": "4/4 verify",
}


def database_url(database: str | None) -> str:
    """A ``--database`` value (a SQLite file or a URL) as a URL; the configured database when None."""
    if database is None:
        return get_settings().database_url
    if "://" in database:
        return database
    return f"sqlite:///{Path(database).expanduser().resolve()}"


def print_step(step: str, message: str) -> None:
    """One progress line per step of the seed's four, as it completes."""
    console.print(f"[bold]{_STEP_LABELS.get(step, step)}:[/bold] {message}", highlight=False)


def print_upgrade_step(step: str, message: str) -> None:
    """Progress of `mko db upgrade` and `mko serve` (only the backup step reports)."""
    console.print(f"[bold]{step}:[/bold] {message}", highlight=False)


def migrate_wol_command(
    database: Annotated[
        str | None,
        typer.Option(
            "--database", help="SQLite file or database URL (default: the configured MKO_DATABASE_URL)"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report what would change; change nothing")
    ] = False,
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="do not back the database up first (nothing to restore from)")
    ] = False,
    backup_dir: Annotated[
        Path | None,
        typer.Option(
            "--backup-dir", help="where the backup goes (default: beside the SQLite file; data/backups)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    # A test hook: fail on purpose after a step, to prove the restore from the backup.
    fail_after: Annotated[str | None, typer.Option("--fail-after", hidden=True)] = None,
) -> None:
    """Add the Wake-on-LAN fields to an existing database: back up, migrate, set defaults, verify.

    Works on mko's own databases and on the earlier orchestrator's (its clusters and nodes are imported).
    A second run changes nothing. Same as `python scripts/migrate_wake_on_lan_fields.py`.
    """
    settings = get_settings()
    configure_logging(settings, console=False)
    report = migrate_wol(
        database_url(database),
        dry_run=dry_run,
        backup=not no_backup,
        backup_dir=backup_dir or settings.backup_dir,
        fail_after=fail_after,
        progress=(lambda _step, _message: None) if as_json else print_step,
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    for line in report.macs_not_imported:
        console.print(f"  MAC not imported: {line}", highlight=False)
    for line in report.notes:
        console.print(f"  note: {line}", highlight=False)
    if report.kept_tables and report.changed:
        console.print(
            f"  the earlier tables are kept as {', '.join(report.kept_tables)} (mko does not use them)",
            highlight=False,
        )
    console.print(report.message, highlight=False)


db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
db_app.command("migrate-wol")(migrate_wol_command)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="do not back up an existing database before changing it")
    ] = False,
) -> None:
    """Migrate the database to the newest schema (creates it if missing; backs up an existing one first)."""
    settings = get_settings()
    configure_logging(settings, console=False)
    before, after, _backup = upgrade_database(
        settings.database_url,
        revision,
        backup=not no_backup,
        backup_dir=settings.backup_dir,
        progress=print_upgrade_step,
    )
    if before == after:
        console.print(f"database already at revision {after}")
    else:
        console.print(f"database upgraded from {before or 'empty'} to {after}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one this mko knows."""
    engine = make_engine(get_settings().database_url)
    try:
        console.print(f"current: {current_revision(engine) or 'empty'}  head: {head_revision()}")
    finally:
        engine.dispose()
