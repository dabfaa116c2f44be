"""The Typer application: shared plumbing for every command group."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import click
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from mko.operations import ownership
from mko.platform.db.migrate import current_revision, head_revision
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade
from mko.platform.errors import EXIT_BAD_INPUT, EXIT_FAILED
from mko.platform.logs import configure_logging
from mko.platform.settings import get_settings

__all__ = ["EXIT_BAD_INPUT", "EXIT_POWER_FAILURE", "console", "emit", "fail", "open_session"]


EXIT_POWER_FAILURE = EXIT_FAILED  # a command that reports its own failed outcome (wake, shutdown, …)
console = Console()


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    click.echo(f"error: {_one_line(message)}", err=True)
    return typer.Exit(code)


@contextmanager
def open_sessions() -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database; a brand-new database is created on first use."""
    settings = get_settings()
    configure_logging(settings, console=False)
    ownership.configure(settings)
    engine = make_engine(settings.database_url)
    try:
        current = current_revision(engine)
        head = head_revision()
        if current is None:
            upgrade(engine)
        elif current != head:
            raise fail(f"the database is at revision {current} but mko needs {head}: run `mko db upgrade`")
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@contextmanager
def open_session() -> Iterator[Session]:
    """A session on the configured database; a brand-new database is created on first use."""
    with open_sessions() as sessions, sessions() as session:
        yield session


def emit(
    data: BaseModel | Sequence[BaseModel], columns: Sequence[str], *, as_json: bool, title: str = ""
) -> None:
    """Print models as a Rich table, or as JSON for scripts."""
    items = [data] if isinstance(data, BaseModel) else list(data)
    if as_json:
        payload: Any = [item.model_dump(mode="json") for item in items]
        if isinstance(data, BaseModel):
            payload = payload[0]
        typer.echo(json.dumps(payload, indent=2))
        return
    if isinstance(data, BaseModel):
        table = Table(title=title or None, show_header=False, box=None)
        for key, value in data.model_dump(mode="json").items():
            table.add_row(f"[bold]{key}[/bold]", _cell(value))
        console.print(table)
        return
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column)
    for item in items:
        row = item.model_dump(mode="json")
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


SiteOpt = Annotated[
    str | None,
    typer.Option(help="wake-agent site whose agents wake it (see docs/wake-agents.md); '' clears it"),
]
