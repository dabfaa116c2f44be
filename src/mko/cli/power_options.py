"""CLI options for every power driver's settings, generated from the drivers' models.

``@power_options`` adds one option per driver setting (except the seed's own WoL columns, which the
commands spell out with the seed's option names) to a command, and hands the values given to the
command as ``power``: a dict of flat setting names. Secrets accept ``-`` (read stdin) and ``?`` (a hidden
prompt) so they stay out of the shell history. A new driver's settings appear here without a change.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from mko.power.registry import DRIVERS

__all__ = ["power_options"]

F = TypeVar("F", bound=Callable[..., Any])
PANEL = "Power method settings (see docs/power-drivers.md)"


def _plain(annotation: Any) -> Any:
    """``int | None`` → ``int``; a type Typer cannot take (a list, a model) → ``str``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = options[0] if len(options) == 1 else str
    return annotation if annotation in (str, int, float, bool) else str


def _generated() -> list[tuple[str, Any, bool]]:
    """(parameter name, annotation with its typer.Option, secret?) for each driver setting."""
    generated: list[tuple[str, Any, bool]] = []
    for name, (info, meta) in DRIVERS.all_params_fields().items():
        if meta.column:
            continue
        option = meta.cli_option(name)
        kind = str if meta.secret else _plain(info.annotation)
        text = meta.help + ("; '-' reads stdin, '?' prompts" if meta.secret else "")
        if kind is bool:
            spec = typer.Option(f"{option}/--no-{option[2:]}", help=text, rich_help_panel=PANEL)
        else:
            spec = typer.Option(option, help=text, rich_help_panel=PANEL)
        generated.append((name, Annotated[kind | None, spec], meta.secret))
    return generated


def power_options(func: F) -> F:
    """Add every driver setting's option to ``func``, which receives the given ones as ``power``."""
    hints = typing.get_type_hints(func, include_extras=True)
    signature = inspect.signature(func)
    own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    own = [p for p in own if p.name != "power"]
    generated = _generated()
    names = {name for name, _annotation, _secret in generated}
    secrets = {name for name, _annotation, secret in generated if secret}
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation, _secret in generated
        if name not in signature.parameters
    ]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        from mko.cli.proxmox import read_secret

        power = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        for name in secrets & power.keys():
            power[name] = read_secret(power[name], name.replace("_", " "))
        return func(*args, power={k: v for k, v in power.items() if v is not None}, **kwargs)

    # Typer reads the signature and the annotations; without __wrapped__ it cannot find the original's.
    setattr(command, "__signature__", signature.replace(parameters=[*own, *extra]))  # noqa: B010
    command.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
    delattr(command, "__wrapped__")
    return typing.cast(F, command)
