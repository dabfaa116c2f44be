"""The root command group: every error becomes one stderr line and the exit code of its branch of the
tree (mko.platform.errors); anything else is a bug, logged with its traceback and answered with exit 70."""

from __future__ import annotations

import logging
import sys
import uuid
from typing import Any

import click
import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from mko.cli.common import _one_line
from mko.cli.lazy import LazyGroup
from mko.platform.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, MkoError, NotFoundError
from mko.platform.missing import next_step

__all__ = ["app"]


class MkoGroup(LazyGroup):
    """Root group (its command groups imported when they run) that turns every error into one stderr
    line and the exit code of its branch."""

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
        except MkoError as exc:
            step = next_step(exc.kind) if isinstance(exc, NotFoundError) else ""
            click.echo(f"error: {_one_line(str(exc))}{'; ' + step if step else ''}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:  # a bug: the traceback goes to the log, one line to the person
            incident = _log_incident(exc)
            click.echo(
                f"error: internal error ({type(exc).__name__}, incident {incident}); "
                f"details in {_log_file()}",
                err=True,
            )
            sys.exit(EXIT_INTERNAL)
        if isinstance(result, int):  # typer.Exit(code) comes back as its code without standalone mode
            sys.exit(result)
        return result


def _log_file() -> str:
    try:
        from mko.platform.settings import get_settings

        return str(get_settings().log_file)
    except Exception:  # the settings themselves may be what is broken
        return "logs/orchestrator.log"


def _log_incident(exc: Exception) -> str:
    """Log ``exc`` with its traceback to the log file (never to the terminal); return the incident id."""
    incident = uuid.uuid4().hex[:12]
    logger = logging.getLogger("mko.cli")
    if not logging.getLogger("mko").handlers:  # the command failed before it opened the database
        try:
            from mko.platform.logs import configure_logging
            from mko.platform.settings import get_settings

            configure_logging(get_settings(), console=False)
        except Exception:  # nowhere to write: the one stderr line is all there is
            return incident
    logger.error("incident %s: %s", incident, type(exc).__name__, exc_info=exc)
    return incident


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
