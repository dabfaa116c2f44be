"""Command-line interface: ``mko …`` and the seed's ``python cli.py …`` run this same app."""

from mko.cli import cluster_power  # noqa: F401  (attaches shutdown/recover to cluster_app)
from mko.cli.agent import agent_app
from mko.cli.app import app
from mko.cli.discover import discover
from mko.cli.ha import cluster_status_command
from mko.cli.inventory import cluster_app, node_app
from mko.cli.lab import lab_app
from mko.cli.nic import ansible_app, collect_mac, node_host_key, node_trust
from mko.cli.notify import notify_app
from mko.cli.operations import operations_app
from mko.cli.power import node_power_command
from mko.cli.proxmox import proxmox_app
from mko.cli.schedules import schedule_app
from mko.cli.system import db_app, serve
from mko.cli.ups import ups_app
from mko.cli.users import token_app, user_app
from mko.cli.wol import wol_app

__all__ = ["app", "main"]

app.add_typer(cluster_app, name="cluster")
app.add_typer(node_app, name="node")
app.add_typer(wol_app, name="wol")
app.add_typer(ups_app, name="ups")
app.add_typer(db_app, name="db")
app.add_typer(ansible_app, name="ansible")
app.add_typer(proxmox_app, name="proxmox")
wol_app.command("collect-mac")(collect_mac)
node_app.command("trust")(node_trust)
node_app.command("host-key")(node_host_key)
node_app.command("power")(node_power_command)
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
