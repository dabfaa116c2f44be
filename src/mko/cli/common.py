"""The Typer application: shared plumbing for every command group."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import click
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session, sessionmaker

from mko.operations import ownership
from mko.platform.db.migrate import current_revision, head_revision, upgrade
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.logs import configure_logging
from mko.platform.settings import get_settings

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_POWER_FAILURE",
    "TimeLeftColumn",
    "console",
    "emit",
    "fail",
    "open_session",
]


EXIT_BAD_INPUT = 2
EXIT_POWER_FAILURE = 1
# Off a terminal (a pipe, a file, a script) Rich would cut every table at 80 columns: there a line is as
# long as its content. On a terminal tables fit its width, and a cell too narrow folds (emit) instead of
# cutting an id or a MAC short.
console = Console() if sys.stdout.isatty() else Console(width=1000)


class TimeLeftColumn(ProgressColumn):
    """Seconds left until a long wait gives up (its ``--timeout``), counted down as it runs."""

    def __init__(self, timeout: float | None) -> None:
        super().__init__()
        self.timeout = timeout

    def render(self, task: Task) -> Text:
        """Return "N s left" (nothing once the task is done, or without a timeout)."""
        if self.timeout is None or task.finished:
            return Text("")
        left = max(0.0, self.timeout - (task.elapsed or 0.0))
        return Text(f"{left:.0f} s left", style="progress.remaining")


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
    if settings.netns:  # the lab's LAN (`mko lab env`): packets, SSH and NUT reads stay inside it
        from mko.lab.netns import join_netns

        join_netns(settings.netns)
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
    data: BaseModel | Sequence[BaseModel],
    columns: Sequence[str],
    *,
    as_json: bool,
    title: str = "",
    brief: bool = False,
) -> None:
    """Print models as a Rich table, or as JSON for scripts; ``brief``: one model by ``columns`` only."""
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
            if not brief or key in columns:
                table.add_row(f"[bold]{key}[/bold]", _cell(value))
        console.print(table)
        return
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column, overflow="fold")
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
