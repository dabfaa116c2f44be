"""The Typer application: shared plumbing for every command group."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from mko.wiring import Wiring

from mko.platform.db.migrate import current_revision, head_revision
from mko.platform.db.upgrade import upgrade
from mko.platform.errors import EXIT_BAD_INPUT, EXIT_FAILED
from mko.platform.logs import configure_logging
from mko.platform.settings import get_settings

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_POWER_FAILURE",
    "console",
    "emit",
    "fail",
    "open_session",
    "open_sessions",
    "open_wiring",
]


EXIT_POWER_FAILURE = EXIT_FAILED  # a command that reports its own failed outcome (wake, shutdown, …)
console = Console()


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    click.echo(f"error: {_one_line(message)}", err=True)
    return typer.Exit(code)


@contextmanager
def open_wiring() -> Iterator[Wiring]:
    """This process's connected parts (mko.wiring) on the configured database; a brand-new database
    is created on first use."""
    from mko.wiring import wire

    settings = get_settings()
    configure_logging(settings, console=False)
    wiring = wire(settings)
    try:
        current = current_revision(wiring.engine)
        head = head_revision()
        if current is None:
            upgrade(wiring.engine)
        elif current != head:
            raise fail(f"the database is at revision {current} but mko needs {head}: run `mko db upgrade`")
        yield wiring
    finally:
        wiring.close()


@contextmanager
def open_sessions() -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database; a brand-new database is created on first use."""
    with open_wiring() as wiring:
        yield wiring.session_factory


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
