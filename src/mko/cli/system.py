"""`mko db …` and `mko serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from mko.cli.app import console
from mko.db import make_engine
from mko.db.migrate import current_revision, head_revision, upgrade
from mko.logs import configure_logging
from mko.settings import get_settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Migrate the database to the newest schema (creates it if missing)."""
    settings = get_settings()
    configure_logging(settings, console=False)
    engine = make_engine(settings.database_url)
    try:
        before = current_revision(engine)
        upgrade(engine, revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
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


def serve(
    host: Annotated[
        str | None, typer.Option(help="listen address (default from settings: 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default from settings: 8080)")] = None,
) -> None:
    """Serve the REST API (/api, /docs) and the web UI (/)."""
    import uvicorn

    from mko.api import create_app

    settings = get_settings()
    configure_logging(settings)
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port, log_config=None)
