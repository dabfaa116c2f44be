"""The root group's table of commands: each command group's module is imported only when it runs.

``mko --help`` prints the one-line helps stored here and imports no group, so it loads no database
code; ``mko node list`` imports ``mko.cli.node`` alone. ``tests/unit/cli/test_lazy_commands.py`` checks
that every stored help is the group's own and that every group module is in the table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
from typer import _click
from typer.core import TyperGroup

__all__ = ["COMMANDS", "NODE_COMMANDS", "WOL_COMMANDS", "LazyCommand", "LazyGroup"]


@dataclass(frozen=True)
class LazyCommand:
    """Where a root command lives (``module:attribute``, a Typer app or a function) and its help line."""

    target: str
    help: str

    def load(self, name: str) -> _click.Command:
        """Import the module and convert the app (or function) as ``add_typer``/``command`` would."""
        module, _, attribute = self.target.partition(":")
        obj = getattr(importlib.import_module(module), attribute)
        # A parent like the root app (no Rich markup), so the group is built exactly as add_typer did.
        parent = typer.Typer(rich_markup_mode=None, add_completion=False)
        if isinstance(obj, typer.Typer):
            parent.add_typer(obj, name=name)
        else:
            parent.command(name)(obj)
        return typer.main.get_group(parent).commands[name]


# In the order `mko --help` lists them (commands first, then groups, as Typer registered them before).
COMMANDS: dict[str, LazyCommand] = {
    "discover": LazyCommand(
        "mko.cli.discover:discover",
        "Find live hosts in a subnet: IP, MAC, name, open ports, and whether each is already a node.",
    ),
    "serve": LazyCommand("mko.cli.serve:serve", "Serve the REST API (/api, /docs) and the web UI (/)."),
    "cluster-status": LazyCommand(
        "mko.cli.ha:cluster_status_command",
        "Show the database, every `mko serve` instance (online or offline) and which one is the leader.",
    ),
    "cluster": LazyCommand("mko.cli.cluster:cluster_app", "Clusters: add, list, show, remove."),
    "node": LazyCommand("mko.cli.node:node_app", "Nodes: add, list, show, update, remove."),
    "wol": LazyCommand(
        "mko.cli.wol:wol_app", "Wake-on-LAN: wake nodes and clusters, status, enable/disable, configure."
    ),
    "ups": LazyCommand(
        "mko.cli.ups:ups_app",
        "UPSes over NUT: add, list, show, remove, status, events, power rules, monitor.",
    ),
    "db": LazyCommand("mko.cli.db:db_app", "Database schema."),
    "ansible": LazyCommand(
        "mko.cli.ansible:ansible_app",
        "Ansible: write the inventory the seed's playbooks use, import the facts they collect.",
    ),
    "proxmox": LazyCommand(
        "mko.cli.proxmox:proxmox_app",
        "Proxmox VE hosts (API endpoints) that start virtual nodes: add, list, show, update, remove, test.",
    ),
    "schedule": LazyCommand(
        "mko.cli.schedule:schedule_app",
        "Schedules: wake a node or cluster at cron times in a time zone (they run inside `mko serve`).",
    ),
    "notify": LazyCommand(
        "mko.cli.notify:notify_app", "Notifications (apprise URLs): test them, set them on power rules."
    ),
    "user": LazyCommand("mko.cli.access:user_app", "Users of the web UI and API: add, list, remove, passwd."),
    "token": LazyCommand("mko.cli.access:token_app", "API tokens: create (shown once), list, revoke."),
    "agent": LazyCommand(
        "mko.cli.agent:agent_app",
        "Wake agents: run one on another LAN (`mko agent --site NAME --url URL --token-file F`), list them.",
    ),
    "operations": LazyCommand(
        "mko.cli.operations:operations_app",
        "Operations: every power action with its actor, owner process, steps and result.",
    ),
    "lab": LazyCommand(
        "mko.cli.lab:lab_app",
        "A virtual lab: MicroK8s nodes with sshd, a real upsd, and mko watching them. Needs root.",
    ),
}


# `mko node add|update` and `mko wol configure` take an option per driver setting, built from every
# driver's settings model (importing every driver): kept apart so that `mko node list` imports no power
# code and `mko wol wake-node` only the drivers its nodes use.
NODE_COMMANDS: dict[str, LazyCommand] = {
    "add": LazyCommand(
        "mko.cli.node_edit:node_add",
        'Add a node (with any power method\'s settings, under "Power method settings").',
    ),
    "update": LazyCommand(
        "mko.cli.node_edit:node_update",
        "Change a node; only the options given change anything (WoL fields: `mko wol configure`).",
    ),
}

WOL_COMMANDS: dict[str, LazyCommand] = {
    "configure": LazyCommand(
        "mko.cli.node_edit:wol_configure",
        "Configure WoL settings for a node; only the options given change anything (any method's too).",
    ),
}


class LazyGroup(TyperGroup):
    """A Typer group whose commands in :attr:`lazy` (the root's :data:`COMMANDS`) are imported on first
    use."""

    lazy: ClassVar[dict[str, LazyCommand]] = COMMANDS

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return [*self.lazy, *(name for name in super().list_commands(ctx) if name not in self.lazy)]

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.commands[cmd_name] = self.lazy[cmd_name].load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        """The command list from the stored helps: ``--help`` imports no command group."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            text = self.lazy[name].help if name in self.lazy else self._loaded_help(ctx, name, limit)
            rows.append((name, _click.utils.make_default_short_help(text, limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _loaded_help(self, ctx: _click.Context, name: str, limit: int) -> str:
        command: Any = self.get_command(ctx, name)
        return str(command.get_short_help_str(limit)) if command is not None else ""
