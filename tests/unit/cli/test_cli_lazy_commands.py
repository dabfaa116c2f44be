"""The root group's stored command table agrees with the command groups it imports lazily."""

from __future__ import annotations

import pkgutil

from typer.testing import CliRunner

import mko.cli
from mko.cli.lazy import COMMANDS, NODE_COMMANDS, WOL_COMMANDS
from mko.cli.root import app

# Modules of mko.cli that are plumbing, not a command group.
PLUMBING = {"common", "lazy", "root", "power_options", "progress"}


# The root's table and the groups' own (commands whose options come from every driver's model).
TABLES = (COMMANDS, NODE_COMMANDS, WOL_COMMANDS)


def test_every_stored_help_is_the_commands_own() -> None:
    for table in TABLES:
        for name, entry in table.items():
            command = entry.load(name)
            assert command.name == name
            assert (command.help or "").strip() == entry.help, name


def test_every_command_module_is_in_a_table() -> None:
    listed = {entry.target.split(":")[0].rsplit(".", 1)[1] for table in TABLES for entry in table.values()}
    modules = {info.name for info in pkgutil.iter_modules(mko.cli.__path__)} - PLUMBING
    assert modules == listed


def test_root_help_lists_every_command_and_runs_one() -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["--help"])
    assert shown.exit_code == 0
    for name in COMMANDS:
        assert f"  {name}  " in shown.output, name
    assert "Nodes: add, list, show, update, remove." in shown.output
    nested = runner.invoke(app, ["node", "--help"])
    assert nested.exit_code == 0 and "list" in nested.output
    for name, entry in NODE_COMMANDS.items():  # the group's lazy commands are listed with their help
        assert f"  {name}  " in nested.output and entry.help[:30] in nested.output.replace("\n", " "), name
    wol = runner.invoke(app, ["wol", "--help"])
    assert wol.exit_code == 0 and "  configure  " in wol.output and "  wake-node  " in wol.output
    unknown = runner.invoke(app, ["nodes"])
    assert unknown.exit_code == 2


def test_the_lazy_console_works_where_rich_needs_a_console() -> None:
    from rich.live import Live
    from rich.progress import Progress

    from mko.cli.common import console

    with Progress(console=console, transient=True) as progress:  # Live enters the console itself
        task = progress.add_task("x", total=1)
        progress.advance(task)
    with Live("x", console=console, transient=True):
        pass
    with console:
        console.print("through the proxy")
