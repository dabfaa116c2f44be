"""The Typer application: shared plumbing for every command group."""

from __future__ import annotations

import gc
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, cast

import click
import typer

from mko.platform.errors import EXIT_BAD_INPUT, EXIT_FAILED

if TYPE_CHECKING:  # imported where used: `mko --help` and plain reads load neither Rich nor the database
    from pydantic import BaseModel
    from rich.console import Console
    from sqlalchemy.orm import Session, sessionmaker

    from mko.wiring import Wiring

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_POWER_FAILURE",
    "YOUNG_COLLECTION_THRESHOLD",
    "console",
    "emit",
    "fail",
    "keep_long_lived_out_of_collections",
    "open_session",
    "open_sessions",
    "open_wiring",
    "print_rows",
]


EXIT_POWER_FAILURE = EXIT_FAILED  # a command that reports its own failed outcome (wake, shutdown, …)

#: Net new container objects between two young-generation collections (CPython's default is 700).
#: Requests in flight keep thousands of objects alive, so at 700 a collection ran every few requests,
#: each walking all of them again (about 5 % of a status request's CPU); at this size a few a minute.
YOUNG_COLLECTION_THRESHOLD = 10_000


def keep_long_lived_out_of_collections(*, collect: bool = True) -> None:
    """Leave what the process built so far (modules, and ``mko serve``'s app with its routes, models and
    schemas: some 140,000 objects, kept for the life of the process; a wake's snapshots, kept until it
    ends) out of the garbage collector's full collections, and collect the young generation less often.

    Each full collection walked all of them: with ``mko serve``'s event loop stopped, 150-200 ms
    several times a minute under load (most of the API's p99 and a tenth of its CPU), and in a
    10,000-node CLI wake the collections its step rows set off, most of the time between the last
    packet and the answer (docs/scale.md). ``collect``: first free what is already garbage (a full
    collection: ``mko serve`` at start-up; a wake about to send skips it, a short command frees all at
    exit anyway). Only these commands do this, not the app factory or the services, so a test
    process's objects stay collectable.
    """
    if collect:
        gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


class _LazyConsole:
    """Rich's Console, created on first use (progress bars, spinners, coloured lines). Off a terminal (a
    pipe, a file, a script) Rich would cut every line at 80 columns: there a line is as long as its
    content."""

    _console: Console | None = None

    def _real(self) -> Console:
        real = type(self)._console
        if real is None:
            from rich.console import Console

            real = type(self)._console = Console() if sys.stdout.isatty() else Console(width=1000)
        return real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    # Special methods are looked up on the type, not through __getattr__: Rich's Live enters the console.
    def __enter__(self) -> Console:
        return self._real().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._real().__exit__(*exc)


console = cast("Console", _LazyConsole())


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
    from mko.platform.db.revision import HEAD, database_revision
    from mko.platform.logs import configure_logging
    from mko.platform.settings import get_settings
    from mko.wiring import wire

    settings = get_settings()
    if settings.netns:  # the lab's LAN (`mko lab env`): packets, SSH and NUT reads stay inside it
        from mko.lab.netns import join_netns

        join_netns(settings.netns)
    configure_logging(settings, console=False)
    wiring = wire(settings)
    try:
        current = database_revision(wiring.engine)
        if current is None:
            from mko.platform.db.upgrade import upgrade  # Alembic only for a brand-new database

            upgrade(wiring.engine)
        elif current != HEAD:
            raise fail(f"the database is at revision {current} but mko needs {HEAD}: run `mko db upgrade`")
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
    data: BaseModel | Sequence[BaseModel],
    columns: Sequence[str],
    *,
    as_json: bool,
    title: str = "",
    brief: bool = False,
) -> None:
    """Print one model as ``key  value`` lines (``brief``: only its ``columns``), several as an aligned
    table of ``columns``, or JSON."""
    single = not isinstance(data, Sequence)
    items = [cast("BaseModel", data)] if single else list(cast("Sequence[BaseModel]", data))
    dumped = [item.model_dump(mode="json") for item in items]
    if as_json:
        typer.echo(json.dumps(dumped[0] if single else dumped, indent=2))
        return
    if title and not single:
        typer.echo(title)
    if single:
        print_rows([(key, _cell(value)) for key, value in dumped[0].items() if not brief or key in columns])
        return
    print_rows([tuple(_cell(row.get(column)) for column in columns) for row in dumped], header=columns)


# Narrowest a column is folded to on a narrow terminal.
_FOLD_MIN = 8


def _fit(widths: list[int], room: int) -> list[int]:
    """Column widths that fit ``room`` characters: the widest column gives way first, none below
    ``_FOLD_MIN`` (a table that still cannot fit runs past the edge rather than lose a character)."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > room:
        widest = max(range(len(widths)), key=widths.__getitem__)
        if widths[widest] <= _FOLD_MIN:
            break
        widths[widest] -= 1
    return widths


def _fold(cell: str, width: int) -> list[str]:
    return [cell[at : at + width] for at in range(0, len(cell), width)] or [""]


def print_rows(rows: Sequence[Sequence[str]], header: Sequence[str] = ()) -> None:
    """Rows as columns padded to their widest cell, two spaces apart (a plain writer: 1,000 rows take
    milliseconds, where a Rich table took a second to lay out). Nothing is ever cut off: off a terminal
    a line is as long as its content; on a terminal too narrow for it, a long cell folds onto the next
    lines of its column instead of cutting an id or a MAC short."""
    lines = [list(header), *(list(row) for row in rows)] if header else [list(row) for row in rows]
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(max(map(len, lines)))]
    if sys.stdout.isatty():
        widths = _fit(widths, shutil.get_terminal_size().columns)
    out: list[str] = []
    for line in lines:
        parts = [_fold(cell, widths[i]) for i, cell in enumerate(line)]
        for row in range(max(map(len, parts))):
            cells = [part[row] if row < len(part) else "" for part in parts]
            out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip())
    typer.echo("\n".join(out))


def _cell(value: Any) -> str:
    """One cell as printable text: a stored control character cannot move the cursor or colour the
    terminal (the plain writer, unlike Rich, would pass it through)."""
    from mko.platform.validation import printable

    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return printable(value, limit=4000, backslashes=False)


JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


SiteOpt = Annotated[
    str | None,
    typer.Option(help="wake-agent site whose agents wake it (see docs/wake-agents.md); '' clears it"),
]
