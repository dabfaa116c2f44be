"""Command-line interface: ``mko …`` and the seed's ``python cli.py …`` run this same app."""

from mko.cli.access import token_app, user_app
from mko.cli.agent import agent_app
from mko.cli.ansible import ansible_app
from mko.cli.cluster import cluster_app
from mko.cli.db import db_app
from mko.cli.discover import discover
from mko.cli.ha import cluster_status_command
from mko.cli.lab import lab_app
from mko.cli.node import node_app
from mko.cli.notify import notify_app
from mko.cli.operations import operations_app
from mko.cli.proxmox import proxmox_app
from mko.cli.root import app
from mko.cli.schedule import schedule_app
from mko.cli.serve import serve
from mko.cli.ups import ups_app
from mko.cli.wol import wol_app

__all__ = ["app", "main"]

app.add_typer(cluster_app, name="cluster")
app.add_typer(node_app, name="node")
app.add_typer(wol_app, name="wol")
app.add_typer(ups_app, name="ups")
app.add_typer(db_app, name="db")
app.add_typer(ansible_app, name="ansible")
app.add_typer(proxmox_app, name="proxmox")
app.add_typer(schedule_app, name="schedule")
app.add_typer(notify_app, name="notify")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(agent_app, name="agent")
app.add_typer(operations_app, name="operations")
app.command("discover")(discover)
app.command("serve")(serve)
app.command("cluster-status")(cluster_status_command)
app.add_typer(lab_app, name="lab")


def main() -> None:
    """Console-script entry point."""
    app()
