"""`mko cluster …` and `mko node …`."""

from __future__ import annotations

from typing import Annotated

import typer

from mko.cli.app import console, emit, open_session
from mko.inventory.clusters import (
    create_cluster,
    delete_cluster,
    get_cluster,
    list_clusters,
    node_counts,
    update_cluster,
)
from mko.inventory.nodes import create_node, delete_node, get_node, list_nodes, update_node
from mko.inventory.schemas import (
    ClusterCreate,
    ClusterPublic,
    ClusterUpdate,
    NodeCreate,
    NodePublic,
    NodeUpdate,
)
from mko.platform.db.models.inventory import NodeRole, WolMethod

cluster_app = typer.Typer(help="Clusters: add, list, show, remove.", no_args_is_help=True)
node_app = typer.Typer(help="Nodes: add, list, show, update, remove.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
NODE_COLUMNS = (
    "id",
    "hostname",
    "ip_address",
    "cluster_id",
    "role",
    "wol_method",
    "wol_mac_address",
    "wol_enabled",
)
CLUSTER_COLUMNS = ("id", "name", "node_count", "site", "description")
SiteOpt = Annotated[
    str | None,
    typer.Option(help="wake-agent site whose agents wake it (see docs/wake-agents.md); '' clears it"),
]


@cluster_app.command("add")
def cluster_add(
    name: str,
    description: Annotated[str, typer.Option(help="free text")] = "",
    site: SiteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a cluster."""
    with open_session() as session:
        data = ClusterCreate(name=name, description=description, site=site)
        cluster = create_cluster(session, data)
        emit(ClusterPublic.model_validate(cluster), CLUSTER_COLUMNS, as_json=as_json)


@cluster_app.command("list")
def cluster_list(as_json: JsonOpt = False) -> None:
    """List clusters with their node counts."""
    with open_session() as session:
        counts = node_counts(session)
        rows = [
            ClusterPublic.model_validate(c).model_copy(update={"node_count": counts.get(c.id, 0)})
            for c in list_clusters(session)
        ]
        emit(rows, CLUSTER_COLUMNS, as_json=as_json, title="Clusters")


@cluster_app.command("show")
def cluster_show(cluster_id: int, as_json: JsonOpt = False) -> None:
    """Show one cluster and its nodes."""
    with open_session() as session:
        cluster = get_cluster(session, cluster_id)
        nodes = [NodePublic.of(n) for n in list_nodes(session, cluster_id)]
        public = ClusterPublic.model_validate(cluster).model_copy(update={"node_count": len(nodes)})
        emit(public, CLUSTER_COLUMNS, as_json=as_json)
        if not as_json and nodes:
            emit(nodes, NODE_COLUMNS, as_json=False, title="Nodes")


@cluster_app.command("update")
def cluster_update(
    cluster_id: int,
    name: Annotated[str | None, typer.Option(help="new name")] = None,
    description: Annotated[str | None, typer.Option(help="new description")] = None,
    site: SiteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a cluster or change its description or site."""
    given = {"name": name, "description": description, "site": site}
    changes = {k: v for k, v in given.items() if v is not None}
    with open_session() as session:
        cluster = update_cluster(session, cluster_id, ClusterUpdate(**changes))
        emit(ClusterPublic.model_validate(cluster), CLUSTER_COLUMNS, as_json=as_json)


@cluster_app.command("remove")
def cluster_remove(cluster_id: int) -> None:
    """Remove an empty cluster."""
    with open_session() as session:
        delete_cluster(session, cluster_id)
    console.print(f"cluster {cluster_id} removed")


@node_app.command("add")
def node_add(
    hostname: str,
    ip_address: str,
    cluster_id: Annotated[
        int | None, typer.Option("--cluster-id", "-c", help="cluster the node belongs to")
    ] = None,
    role: Annotated[NodeRole, typer.Option(help="control-plane or worker")] = NodeRole.WORKER,
    ssh_user: Annotated[str, typer.Option(help="SSH user")] = "ubuntu",
    ssh_port: Annotated[int, typer.Option(help="SSH port")] = 22,
    ssh_key: Annotated[str | None, typer.Option("--ssh-key", help="path of the SSH private key")] = None,
    mac_address: Annotated[
        str | None, typer.Option("--mac-address", "--mac", help="MAC for Wake-on-LAN")
    ] = None,
    method: Annotated[WolMethod | None, typer.Option(help="power-on method")] = None,
    enable_wol: Annotated[bool, typer.Option("--enable-wol", help="enable Wake-on-LAN now")] = False,
    description: Annotated[str, typer.Option(help="free text")] = "",
    site: SiteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a node."""
    given = {
        "hostname": hostname,
        "ip_address": ip_address,
        "cluster_id": cluster_id,
        "role": role,
        "ssh_user": ssh_user,
        "ssh_port": ssh_port,
        "ssh_key_path": ssh_key,
        "wol_mac_address": mac_address,
        "wol_method": method,
        "description": description,
        "site": site,
    }
    data = NodeCreate(**{k: v for k, v in given.items() if v is not None})
    if enable_wol:
        data.wol_enabled = True
    with open_session() as session:
        emit(NodePublic.of(create_node(session, data)), NODE_COLUMNS, as_json=as_json)


@node_app.command("list")
def node_list(
    cluster_id: Annotated[int | None, typer.Option("--cluster-id", "-c", help="only this cluster")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List nodes."""
    with open_session() as session:
        nodes = [NodePublic.of(n) for n in list_nodes(session, cluster_id)]
        emit(nodes, NODE_COLUMNS, as_json=as_json, title="Nodes")


@node_app.command("show")
def node_show(node_id: int, as_json: JsonOpt = False) -> None:
    """Show every field of a node."""
    with open_session() as session:
        emit(NodePublic.of(get_node(session, node_id)), NODE_COLUMNS, as_json=as_json)


@node_app.command("update")
def node_update(
    node_id: int,
    hostname: Annotated[str | None, typer.Option(help="new host name")] = None,
    ip_address: Annotated[str | None, typer.Option("--ip-address", "--ip", help="new IPv4 address")] = None,
    cluster_id: Annotated[int | None, typer.Option("--cluster-id", "-c", help="move to this cluster")] = None,
    role: Annotated[NodeRole | None, typer.Option(help="control-plane or worker")] = None,
    ssh_user: Annotated[str | None, typer.Option(help="SSH user")] = None,
    ssh_port: Annotated[int | None, typer.Option(help="SSH port")] = None,
    ssh_key: Annotated[str | None, typer.Option("--ssh-key", help="path of the SSH private key")] = None,
    description: Annotated[str | None, typer.Option(help="free text")] = None,
    site: SiteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a node; only the options given change anything (WoL fields: `mko wol configure`)."""
    given = {
        "hostname": hostname,
        "ip_address": ip_address,
        "cluster_id": cluster_id,
        "role": role,
        "ssh_user": ssh_user,
        "ssh_port": ssh_port,
        "ssh_key_path": ssh_key,
        "description": description,
        "site": site,
    }
    data = NodeUpdate(**{k: v for k, v in given.items() if v is not None})
    with open_session() as session:
        emit(NodePublic.of(update_node(session, node_id, data)), NODE_COLUMNS, as_json=as_json)


@node_app.command("remove")
def node_remove(node_id: int) -> None:
    """Remove a node (its operation history stays)."""
    with open_session() as session:
        delete_node(session, node_id)
    console.print(f"node {node_id} removed")
