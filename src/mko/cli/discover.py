"""`mko discover <cidr>` — find live hosts, their MACs and names, and add them as nodes."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.table import Table

from mko.cli.common import console, open_sessions
from mko.inventory import discovery
from mko.inventory.discovery import DiscoverRequest, DiscoveryResult
from mko.operations.records import Actor
from mko.platform.settings import get_settings


def discover(
    cidr: Annotated[str, typer.Argument(help="IPv4 network, e.g. 192.168.1.0/24")],
    ports: Annotated[
        str | None, typer.Option("--ports", help="TCP ports to probe, e.g. 22,16443 [default: 22,16443]")
    ] = None,
    icmp: Annotated[bool, typer.Option("--icmp", help="also ping (ICMP echo; needs root)")] = False,
    add: Annotated[bool, typer.Option("--add", help="add the hosts not in the inventory as nodes")] = False,
    cluster: Annotated[int | None, typer.Option("--cluster", help="cluster the added nodes join")] = None,
    force: Annotated[bool, typer.Option("--force", help="allow a range larger than /22")] = False,
    resolve: Annotated[bool, typer.Option("--resolve/--no-resolve", help="reverse DNS names")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Find live hosts in a subnet: IP, MAC, name, open ports, and whether each is already a node."""
    settings = get_settings()
    request = DiscoverRequest(
        cidr=cidr,
        ports=discovery.parse_ports(ports, settings.discovery_ports),
        icmp=icmp,
        force=force,
        resolve=resolve,
        add=add,
        cluster_id=cluster,
    )
    with open_sessions() as sessions:
        if as_json:
            result = asyncio.run(discovery.discover_and_add(sessions, settings, request, Actor.cli()))
        else:
            label = f"scanning {cidr} on port(s) {','.join(map(str, request.ports or []))}…"
            with console.status(label):
                result = asyncio.run(discovery.discover_and_add(sessions, settings, request, Actor.cli()))
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    _print(result)


def _print(result: DiscoveryResult) -> None:
    table = Table(title=f"{result.cidr}: {len(result.hosts)} live host(s)")
    for column in ("ip", "mac", "hostname", "open ports", "seen by", "inventory"):
        table.add_column(column)
    for host in result.hosts:
        if host.added_node_id is not None:
            known = f"added as node {host.added_node_id}"
        elif host.node_id is not None:
            known = f"node {host.node_id} {host.node_hostname} (by {'+'.join(host.known_by)})"
        else:
            known = "new"
        table.add_row(
            host.ip,
            host.mac or "—",
            host.hostname or "—",
            ",".join(map(str, host.open_ports)) or "—",
            ",".join(host.seen_by),
            known,
        )
    console.print(table)
    known_count = sum(1 for h in result.hosts if h.node_id is not None)
    console.print(
        f"{result.addresses} address(es) in {result.seconds:.1f} s: {len(result.hosts)} live,"
        f" {known_count} already in the inventory, {len(result.new_hosts)} new"
        + (f"; operation {result.operation_id}" if result.operation_id else "")
    )
