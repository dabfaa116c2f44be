"""The root command group: every error a person can cause becomes one stderr line and
its exit code."""

from __future__ import annotations

import sys
from typing import Any

import click
import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from mko.cli.common import EXIT_BAD_INPUT, EXIT_POWER_FAILURE, _one_line
from mko.cli.lazy import LazyGroup
from mko.platform.errors import MkoError, NotFoundError, PowerError
from mko.platform.missing import next_step

__all__ = ["app"]


class MkoGroup(LazyGroup):
    """Root group that turns every error a person can cause into one stderr line and exit code 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run without click's standalone handling so errors are reported our way."""
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except typer.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except TyperException as exc:  # usage errors: bad option value, missing argument, unknown option
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            click.echo(f"error: {_one_line(message)}", err=True)
            sys.exit(getattr(exc, "exit_code", EXIT_BAD_INPUT))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            click.echo(f"error: {field}: {first['msg']}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except PowerError as exc:  # the request was fine; the power action failed
            click.echo(f"error: {_one_line(str(exc))}", err=True)
            sys.exit(EXIT_POWER_FAILURE)
        except MkoError as exc:
            step = next_step(exc.kind) if isinstance(exc, NotFoundError) else ""
            click.echo(f"error: {_one_line(str(exc))}{'; ' + step if step else ''}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        if isinstance(result, int):  # typer.Exit(code) comes back as its code without standalone mode
            sys.exit(result)
        return result


app = typer.Typer(
    cls=MkoGroup,
    name="mko",
    help="Power orchestration for MicroK8s clusters: UPS-driven shutdown and verified Wake-on-LAN.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    # The command groups come from mko.cli.lazy.COMMANDS, imported when they run.
    pass
