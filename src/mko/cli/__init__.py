"""Command-line interface: ``mko …`` and the seed's ``python cli.py …`` run this same app."""

from mko.cli.app import app
from mko.cli.inventory import cluster_app, node_app
from mko.cli.system import db_app, serve
from mko.cli.wol import wol_app

__all__ = ["app", "main"]

app.add_typer(cluster_app, name="cluster")
app.add_typer(node_app, name="node")
app.add_typer(wol_app, name="wol")
app.add_typer(db_app, name="db")
app.command("serve")(serve)


def main() -> None:
    """Console-script entry point."""
    app()
