"""`mko proxmox …` — the Proxmox VE hosts that start and stop virtual nodes."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from mko.cli.common import console, emit, open_session
from mko.inventory import proxmox_hosts
from mko.inventory.schemas import ProxmoxHostCreate, ProxmoxHostPublic, ProxmoxHostUpdate
from mko.platform.settings import get_settings

proxmox_app = typer.Typer(
    help="Proxmox VE hosts (API endpoints) that start virtual nodes: add, list, show, update, remove, test.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
HOST_COLUMNS = ("id", "name", "host", "port", "auth", "token_id", "username", "verify_tls", "node_count")
SECRET_HELP = "API token secret, or the user's password; '-' reads it from stdin (never shown again)"  # noqa: S105


def read_secret(value: str | None, prompt: str) -> str | None:
    """A secret from an option value, stdin ('-'), or a hidden prompt when asked for one (value '?')."""
    if value == "-":
        return sys.stdin.readline().rstrip("\r\n")
    if value == "?":
        secret: str = typer.prompt(prompt, hide_input=True)
        return secret
    return value


@proxmox_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="a name for this host, e.g. pve")],
    host: Annotated[str, typer.Option("--host", help="host name or address of a Proxmox node")],
    secret: Annotated[str, typer.Option("--secret", help=SECRET_HELP, prompt=True, hide_input=True)],
    port: Annotated[int, typer.Option("--port", help="API port")] = 8006,
    token_id: Annotated[
        str | None, typer.Option("--token-id", help="API token id: user@realm!tokenname")
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="user@realm, to log in with a password instead")
    ] = None,
    verify_tls: Annotated[
        bool, typer.Option("--verify-tls/--no-verify-tls", help="verify the API's TLS certificate")
    ] = True,
    ca_file: Annotated[
        str | None, typer.Option("--ca-file", help="CA file to trust, e.g. a copy of pve-root-ca.pem")
    ] = None,
    fingerprint: Annotated[
        str | None, typer.Option("--fingerprint", help="pin the certificate's SHA-256 fingerprint")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a Proxmox host; prefer an API token (Datacenter → Permissions → API Tokens)."""
    data = ProxmoxHostCreate(
        name=name,
        host=host,
        port=port,
        token_id=token_id,
        username=username,
        secret=read_secret(secret, "Secret") or "",
        verify_tls=verify_tls,
        ca_file=ca_file,
        fingerprint=fingerprint,
    )
    with open_session() as session:
        created = proxmox_hosts.create_host(session, get_settings(), data)
        emit(ProxmoxHostPublic.of(created), HOST_COLUMNS, as_json=as_json)


@proxmox_app.command("list")
def list_hosts(as_json: JsonOpt = False) -> None:
    """List Proxmox hosts (secrets are never shown)."""
    with open_session() as session:
        counts = proxmox_hosts.node_counts(session)
        rows = [ProxmoxHostPublic.of(h, counts.get(h.id, 0)) for h in proxmox_hosts.list_hosts(session)]
        emit(rows, HOST_COLUMNS, as_json=as_json, title="Proxmox hosts")


@proxmox_app.command("show")
def show(host_id: int, as_json: JsonOpt = False) -> None:
    """Show one Proxmox host."""
    with open_session() as session:
        host = proxmox_hosts.get_host(session, host_id)
        count = proxmox_hosts.node_counts(session).get(host_id, 0)
        emit(ProxmoxHostPublic.of(host, count), HOST_COLUMNS, as_json=as_json)


@proxmox_app.command("update")
def update(
    host_id: int,
    name: Annotated[str | None, typer.Option("--name", help="new name")] = None,
    host: Annotated[str | None, typer.Option("--host", help="new host name or address")] = None,
    port: Annotated[int | None, typer.Option("--port", help="new API port")] = None,
    token_id: Annotated[str | None, typer.Option("--token-id", help="new API token id")] = None,
    username: Annotated[str | None, typer.Option("--username", help="new user@realm")] = None,
    secret: Annotated[str | None, typer.Option("--secret", help=SECRET_HELP + "; '?' prompts")] = None,
    verify_tls: Annotated[bool | None, typer.Option("--verify-tls/--no-verify-tls")] = None,
    ca_file: Annotated[str | None, typer.Option("--ca-file", help="new CA file")] = None,
    fingerprint: Annotated[str | None, typer.Option("--fingerprint", help="new pinned fingerprint")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a Proxmox host (e.g. rotate its token secret)."""
    given = {
        "name": name,
        "host": host,
        "port": port,
        "token_id": token_id,
        "username": username,
        "secret": read_secret(secret, "Secret"),
        "verify_tls": verify_tls,
        "ca_file": ca_file,
        "fingerprint": fingerprint,
    }
    data = ProxmoxHostUpdate(**{k: v for k, v in given.items() if v is not None})
    if not data.model_fields_set:
        raise typer.BadParameter("give at least one option to change (see --help)")
    with open_session() as session:
        changed = proxmox_hosts.update_host(session, get_settings(), host_id, data)
        count = proxmox_hosts.node_counts(session).get(host_id, 0)
        emit(ProxmoxHostPublic.of(changed, count), HOST_COLUMNS, as_json=as_json)


@proxmox_app.command("remove")
def remove(host_id: int) -> None:
    """Remove a Proxmox host that no node uses."""
    with open_session() as session:
        proxmox_hosts.delete_host(session, host_id)
    console.print(f"removed Proxmox host {host_id}")


@proxmox_app.command("test")
def check(host_id: int, as_json: JsonOpt = False) -> None:
    """Log in as mko would and list what it sees (exit 1 with Proxmox's reason when it cannot)."""
    settings = get_settings()
    with open_session() as session, console.status(f"connecting to Proxmox host {host_id}…"):
        result = asyncio.run(proxmox_hosts.check_host(session, settings, host_id))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(show_header=False, box=None)
    for key, value in result.items():
        table.add_row(f"[bold]{key}[/bold]", ", ".join(value) if isinstance(value, list) else str(value))
    console.print(table)
