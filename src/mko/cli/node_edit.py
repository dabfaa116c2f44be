"""`mko node add`, `mko node update` and `mko wol configure`: an option for every power driver's
setting, generated from the drivers' settings models (:mod:`mko.cli.power_options`); loaded only when
one of them runs (:data:`mko.cli.lazy.NODE_COMMANDS`, :data:`mko.cli.lazy.WOL_COMMANDS`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mko.cli.common import JsonOpt, SiteOpt, console, emit, open_session
from mko.cli.node import NODE_COLUMNS
from mko.cli.power_options import power_options
from mko.platform.db.models.inventory import NodeRole
from mko.power.registry import PowerMethod

__all__ = ["node_add", "node_update", "wol_configure"]


DependsOpt = Annotated[
    str | None,
    typer.Option(
        "--depends-on",
        help="ids of the nodes it needs up first, e.g. 3,4 ('' for none); shutdown: the reverse",
    ),
]


FedByOpt = Annotated[
    str | None,
    typer.Option(
        "--fed-by",
        help="ids of the UPSes feeding its power supplies, e.g. 1,2 ('' for none); on battery only when"
        " all are",
    ),
]


def _ids(text: str | None, option: str = "--depends-on", what: str = "node") -> list[int] | None:
    """``3,4`` → [3, 4]; '' → [] (none); None → not given."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a list of {what} ids such as 3,4", param_hint=option
        ) from None


# The options of `node add` and `node update` that are the node's own fields, by the API's names.
NODE_FIELDS = ("hostname", "ip_address", "cluster_id", "role", "ssh_user", "ssh_port", "description", "site")


def _node_fields(options: dict[str, Any], **renamed: Any) -> dict[str, Any]:
    """A command's options as the API's node fields (those given: None is "not given"), with
    ``--ssh-key``, ``--depends-on``, ``--fed-by`` and every driver setting (``power``)."""
    values = {name: options[name] for name in NODE_FIELDS} | renamed
    values |= {"ssh_key_path": options["ssh_key"], "depends_on": _ids(options["depends_on"])}
    values |= {"fed_by": _ids(options["fed_by"], "--fed-by", "UPS")}
    values |= options["power"] or {}
    return {name: value for name, value in values.items() if value is not None}


@power_options
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
    method: Annotated[PowerMethod | None, typer.Option(help="power-on method")] = None,
    proxmox_vm_id: Annotated[int | None, typer.Option("--proxmox-vm-id", help="VM id in Proxmox")] = None,
    proxmox_host_id: Annotated[
        int | None, typer.Option("--proxmox-host-id", help="mko's Proxmox host id (a VM's, or a host node's)")
    ] = None,
    enable_wol: Annotated[bool, typer.Option("--enable-wol", help="enable Wake-on-LAN now")] = False,
    description: Annotated[str, typer.Option(help="free text")] = "",
    site: SiteOpt = None,
    depends_on: DependsOpt = None,
    fed_by: FedByOpt = None,
    as_json: JsonOpt = False,
    power: dict[str, Any] | None = None,
) -> None:
    """Add a node (with any power method's settings, under "Power method settings")."""
    from mko.inventory.nodes import create_node
    from mko.inventory.schemas import NodeCreate, NodePublic

    given = _node_fields(
        locals(),
        wol_mac_address=mac_address,
        wol_method=method,
        proxmox_vm_id=proxmox_vm_id,
        proxmox_host_id=proxmox_host_id,
    )
    data = NodeCreate(**given)
    if enable_wol:
        data.wol_enabled = True
    with open_session() as session:
        node = NodePublic.of(create_node(session, data))
        emit(node, NODE_COLUMNS, as_json=as_json, brief=True)
    if not as_json:
        console.print(f"every field: `mko node show {node.id}`", highlight=False, markup=False)


@power_options
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
    depends_on: DependsOpt = None,
    fed_by: FedByOpt = None,
    as_json: JsonOpt = False,
    power: dict[str, Any] | None = None,
) -> None:
    """Change a node; only the options given change anything (WoL fields: `mko wol configure`)."""
    from mko.inventory.nodes import update_node
    from mko.inventory.schemas import NodePublic, NodeUpdate

    data = NodeUpdate(**_node_fields(locals()))
    with open_session() as session:
        emit(NodePublic.of(update_node(session, node_id, data)), NODE_COLUMNS, as_json=as_json)


@power_options
def wol_configure(
    node_id: int,
    mac_address: Annotated[str | None, typer.Option("--mac-address", help="e.g. aa:bb:cc:dd:ee:ff")] = None,
    method: Annotated[PowerMethod | None, typer.Option("--method", help="how the node is powered on")] = None,
    port: Annotated[int | None, typer.Option("--port", help="UDP port of the magic packet (9, or 7)")] = None,
    broadcast: Annotated[str | None, typer.Option("--broadcast", help="broadcast address to send to")] = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="allow waking this node")] = None,
    physical: Annotated[
        bool | None, typer.Option("--physical/--virtual", help="machine or Proxmox VM")
    ] = None,
    proxmox_vm_id: Annotated[int | None, typer.Option("--proxmox-vm-id", help="VM id in Proxmox")] = None,
    proxmox_host_id: Annotated[
        int | None, typer.Option("--proxmox-host-id", help="mko's Proxmox host id")
    ] = None,
    probe_port: Annotated[
        int | None, typer.Option("--probe-port", help="TCP port that proves the node is up")
    ] = None,
    as_json: JsonOpt = False,
    power: dict[str, Any] | None = None,
) -> None:
    """Configure WoL settings for a node; only the options given change anything (any method's too)."""
    from mko.cli.wol import configure_node
    from mko.inventory.schemas import WolConfigure

    given: dict[str, Any] = {
        "wol_mac_address": mac_address,
        "wol_method": method,
        "wol_port": port,
        "wol_broadcast_address": broadcast,
        "wol_enabled": enable,
        "is_virtual_node": None if physical is None else not physical,
        "proxmox_vm_id": proxmox_vm_id,
        "proxmox_host_id": proxmox_host_id,
        "probe_port": probe_port,
        **(power or {}),
    }
    data = WolConfigure(**{k: v for k, v in given.items() if v is not None})
    if not data.model_fields_set:
        raise typer.BadParameter("give at least one option to change (see --help)")
    configure_node(node_id, data, as_json)
