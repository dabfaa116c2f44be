"""The node's own network card, over SSH: MAC collection and Wake-on-LAN enable/disable/read-back.

MAC collection (``wol collect-mac``) reads ``ip -j -d link``, ``ip -j addr`` and ``ip -j route show
default`` (JSON, never scraped text), picks the card that carries the node's inventory IP (else the
default route), looking through bridges, bonds and VLANs to the physical port underneath, and stores
its MAC, name and prefix length. Every interface found is stored too.

NIC Wake-on-LAN (``wol enable|disable``) runs ``ethtool -s IFACE wol g|d`` on the card whose MAC mko
sends magic packets to, makes the setting survive reboots, and reads ``ethtool IFACE`` back. How it
persists is detected on the node, in this order:

1. NetworkManager manages the card → ``nmcli connection modify CONN 802-3-ethernet.wake-on-lan magic``
2. systemd-networkd runs → a ``.link`` file ``/etc/systemd/network/50-mko-wol-IFACE.link``
3. systemd without either → a oneshot unit ``mko-wol-IFACE.service`` running ethtool at boot

Disabling writes the same places with Wake-on off (a persistent ``d``), since the driver's default
after a reboot may well be ``g``. Nothing in mko ever turns Wake-on-LAN off at shutdown: that is what
arms the card for the magic packet.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, sessionmaker

from mko import inventory
from mko.operations.records import Actor, finish_operation, get_operation, record_step, start_operation
from mko.platform import validation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node, WolMethod
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import in_thread_session
from mko.platform.errors import ConflictError, InputError, MkoError, PowerError, UnsupportedActionError
from mko.platform.settings import Settings
from mko.schemas import WolConfigure
from mko.ssh.client import SshError, SshSession, SshTarget, SshUnreachableError, connect

__all__ = [
    "ETHTOOL",
    "Choice",
    "EthtoolWol",
    "Interface",
    "NicError",
    "NodeNetwork",
    "WolChange",
    "apply_network_facts",
    "choose_interface",
    "collect_macs",
    "link_file",
    "oneshot_unit",
    "parse_ethtool",
    "parse_interfaces",
    "set_nic_wol",
]

log = logging.getLogger("mko.nic")

ETHTOOL = "/usr/sbin/ethtool"
MAGIC_METHODS = frozenset({WolMethod.ETHERNET, WolMethod.ETHERNET_RAW})
# Interface kinds (ip -d link "info_kind") that are not a network card of their own.
VIRTUAL_KINDS = frozenset(
    {
        "veth", "bridge", "bond", "team", "vlan", "macvlan", "macvtap", "ipvlan", "vxlan", "geneve",
        "tun", "tap", "dummy", "wireguard", "ipip", "gre", "gretap", "ip6gre", "sit", "ip6tnl", "vrf",
        "nlmon", "ifb", "openvswitch", "vti", "xfrm", "bareudp", "netkit",
    }
)  # fmt: skip
# Names container runtimes, CNIs and VPNs give their interfaces.
VIRTUAL_PREFIXES = (
    "veth", "cni", "flannel", "cali", "docker", "br-", "virbr", "vnet", "tap", "tun", "vxlan", "kube-",
    "cilium", "weave", "lxc", "lxd", "wg", "tailscale", "zt", "genev", "dummy", "tunl", "nodelocaldns",
    "podman", "vmnet", "vboxnet",
)  # fmt: skip
_AGGREGATE_KINDS = frozenset({"bridge", "bond", "team"})
_STACKED_KINDS = frozenset({"vlan", "macvlan", "macvtap", "ipvlan"})
# ip's link types and kinds (ether, loopback, veth, bridge...) and operstates (UP, LOWER_UP...).
_WORD = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_HARDWARE_ADDRESS = re.compile(r"[0-9A-Fa-f:.-]{1,64}")
_WOL_LINE = re.compile(r"^\s*(Supports Wake-on|Wake-on):\s*(\S*)\s*$", re.MULTILINE)


class NicError(PowerError):
    """The node's network card could not be read or configured."""


# ----------------------------------------------------------------------------- interfaces


@dataclass(frozen=True)
class Interface:
    """One interface as the node reports it."""

    name: str
    mac: str | None
    kind: str  # info_kind from `ip -d link` (veth, bridge, …), else link_type (ether, loopback, …)
    state: str
    master: str | None = None
    parent: str | None = None
    addresses: tuple[str, ...] = ()  # IPv4 and IPv6, as address/prefix
    default_route: bool = False

    @property
    def loopback(self) -> bool:
        """Return whether this is a loopback interface."""
        return self.kind == "loopback"

    @property
    def virtual(self) -> bool:
        """Return whether this is a software interface rather than a network card."""
        return self.kind in VIRTUAL_KINDS or self.name.startswith(VIRTUAL_PREFIXES) or self.kind != "ether"

    def ipv4(self) -> list[ipaddress.IPv4Interface]:
        """Return the IPv4 addresses with their prefixes."""
        found = []
        for text in self.addresses:
            address = ipaddress.ip_interface(text)
            if isinstance(address, ipaddress.IPv4Interface):
                found.append(address)
        return found

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form stored in nodes.nic_interfaces."""
        return {
            "name": self.name,
            "mac": self.mac,
            "kind": self.kind,
            "state": self.state,
            "master": self.master,
            "parent": self.parent,
            "addresses": list(self.addresses),
            "default_route": self.default_route,
            "virtual": self.virtual,
        }


def _json_list(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise NicError(f"`{what}` did not print JSON: {exc}") from None
    if not isinstance(data, list):
        raise NicError(f"`{what}` printed {type(data).__name__}, not a list")
    return [entry for entry in data if isinstance(entry, dict)]


def _fact(value: Any, what: str, check: Callable[[str], Any]) -> str:
    """A value a node reported, checked like user input: a bad one refuses the node's facts."""
    text = str(value)
    try:
        check(text)
    except (InputError, ValueError):
        raise NicError(
            f"the node reports {what} {validation.quoted(text)}, which is not valid; nothing was stored"
        ) from None
    return text


def _hardware_address(text: str) -> None:
    # Any link layer's address as ip prints it: hex bytes with separators (Ethernet, InfiniBand, tunnels).
    if not _HARDWARE_ADDRESS.fullmatch(text):
        raise ValueError(text)


def _word(text: str) -> None:
    if not _WORD.fullmatch(text):
        raise ValueError(text)


def _address_fact(info: dict[str, Any]) -> str:
    family = info["family"]
    prefix = info.get("prefixlen", 32 if family == "inet" else 128)
    text = f"{info['local']}/{prefix}"
    return _fact(text, "the address", _ip_interface)


def _ip_interface(text: str) -> None:
    ipaddress.ip_interface(validation.check_text(text, "address", max_length=100))


def parse_interfaces(link_json: str, addr_json: str, route_json: str) -> list[Interface]:
    """Return the interfaces of ``ip -j -d link``, with addresses and the default route marked.

    Node facts are input like any other: an interface name, kind, state or address that would be
    refused from a person refuses the node's facts (NicError), so nothing of them is stored.
    """
    try:
        return _parse_interfaces(link_json, addr_json, route_json)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # Not what iproute2 prints: a broken or lying node. Its facts are refused as a whole.
        raise NicError(f"`ip -j` printed JSON of an unexpected shape ({type(exc).__name__})") from None


def _parse_interfaces(link_json: str, addr_json: str, route_json: str) -> list[Interface]:
    addresses: dict[str, list[str]] = {}
    for entry in _json_list(addr_json, "ip -j addr show"):
        for info in entry.get("addr_info", []):
            if info.get("family") in ("inet", "inet6") and info.get("local"):
                name = _fact(entry.get("ifname", ""), "an interface named", validation.validate_interface)
                addresses.setdefault(name, []).append(_address_fact(info))
    routes = sorted(
        (r for r in _json_list(route_json, "ip -j route show default") if r.get("dst") == "default"),
        key=lambda r: int(r.get("metric", 0)),
    )
    default_dev = routes[0].get("dev") if routes else None
    if default_dev is not None:
        _fact(default_dev, "a default route device", validation.validate_interface)
    interfaces = []
    for entry in _json_list(link_json, "ip -j -d link show"):
        if not entry.get("ifname"):
            continue
        name = _fact(entry["ifname"], "an interface named", validation.validate_interface)
        linkinfo = entry.get("linkinfo") or {}
        if not isinstance(linkinfo, dict):
            raise NicError(f"`ip -j -d link show` gave {name} a linkinfo that is not an object")
        kind = _fact(linkinfo.get("info_kind") or entry.get("link_type") or "unknown", "a link kind", _word)
        # NOTE: a bond gives its ports the bond's MAC, and a MAC can be changed at run time; a card that
        # is off wakes on its permanent (EEPROM) address, which `ip -d` shows as permaddr/perm_hwaddr.
        slave_data = linkinfo.get("info_slave_data") or {}
        mac = entry.get("permaddr") or slave_data.get("perm_hwaddr") or entry.get("address")
        if mac:
            _fact(mac, "a link-layer address", _hardware_address)
        try:
            mac = validation.normalize_mac(mac) if mac and kind != "loopback" else None
        except InputError:
            mac = None  # e.g. a tunnel's all-zero or non-Ethernet address
        parent = entry.get("link") if kind in _STACKED_KINDS else None
        master = entry.get("master")
        interfaces.append(
            Interface(
                name=name,
                mac=mac,
                kind=kind,
                state=_fact(entry.get("operstate", "UNKNOWN"), "a link state", _word),
                master=None if master is None else _fact(master, "a master", validation.validate_interface),
                parent=_fact(parent, "a parent", validation.validate_interface) if parent else None,
                addresses=tuple(addresses.get(name, [])),
                default_route=name == default_dev,
            )
        )
    return interfaces


@dataclass(frozen=True)
class Choice:
    """The card mko wakes: the interface, its MAC, and the subnet it sits on."""

    interface: Interface
    address: str | None  # the IPv4 address/prefix the node is reached on
    prefix_len: int | None
    reason: str

    @property
    def mac(self) -> str:
        """Return the card's MAC."""
        assert self.interface.mac is not None
        return self.interface.mac


def _physical_under(interface: Interface, by_name: dict[str, Interface], depth: int = 0) -> Interface | None:
    """Return the network card carrying INTERFACE: itself, a bridge/bond member, or a VLAN's parent."""
    if depth > 4:
        return None
    if interface.mac and not interface.virtual:
        return interface
    if interface.kind in _AGGREGATE_KINDS:
        members = sorted(
            (i for i in by_name.values() if i.master == interface.name),
            key=lambda i: (i.state != "UP", i.name),
        )
        for member in members:
            found = _physical_under(member, by_name, depth + 1)
            if found is not None:
                return found
    if interface.parent and interface.parent in by_name:
        return _physical_under(by_name[interface.parent], by_name, depth + 1)
    return None


def choose_interface(interfaces: Sequence[Interface], node_ip: str | None) -> Choice:
    """Pick the card to wake: the one carrying NODE_IP, else the default route; virtual ones last."""
    by_name = {i.name: i for i in interfaces}
    candidates = [i for i in interfaces if not i.loopback]
    on_ip = None
    if node_ip:
        ip = ipaddress.ip_address(node_ip)
        on_ip = next((i for i in candidates if any(a.ip == ip for a in i.ipv4())), None)
    routed = next((i for i in candidates if i.default_route), None)
    layer3, why = (on_ip, f"carries {node_ip}") if on_ip else (routed, "carries the default route")
    # `subnet` is the interface whose address (and prefix, for the broadcast) the card's traffic uses.
    chosen, subnet, reason = None, None, ""
    if layer3 is not None:
        chosen = _physical_under(layer3, by_name)
        if chosen is not None:
            subnet = layer3
            reason = why if chosen is layer3 else f"network card under {layer3.name}, which {why}"
    if chosen is None:
        physical = [i for i in candidates if i.mac and not i.virtual]
        with_mac = [i for i in candidates if i.mac]
        if len(physical) == 1:
            chosen, reason = physical[0], "the only network card"
        elif layer3 is not None and layer3.mac:
            chosen, subnet = layer3, layer3
            reason = f"{why}; a virtual {layer3.kind} interface, the only one there is"
        elif len(with_mac) == 1:
            chosen, reason = with_mac[0], f"the only interface with a MAC (virtual {with_mac[0].kind})"
    if chosen is None or chosen.mac is None:
        names = ", ".join(f"{i.name} ({i.kind})" for i in candidates) or "none"
        raise NicError(f"no network card carries {node_ip or 'the default route'}; interfaces: {names}")
    v4 = (subnet or chosen).ipv4()
    if node_ip:
        v4 = sorted(v4, key=lambda a: str(a.ip) != node_ip)
    address, prefix = (str(v4[0]), v4[0].network.prefixlen) if v4 else (None, None)
    return Choice(chosen, address, prefix, reason)


async def read_interfaces(session: SshSession) -> list[Interface]:
    """Read every interface of the node with three ``ip -j`` commands on one connection."""
    link, addr, route = await asyncio.gather(
        session.run(["ip", "-j", "-d", "link", "show"], check=True),
        session.run(["ip", "-j", "addr", "show"], check=True),
        session.run(["ip", "-j", "-4", "route", "show", "default"], check=True),
    )
    return parse_interfaces(link.stdout, addr.stdout, route.stdout)


# ----------------------------------------------------------------------------- ethtool


@dataclass(frozen=True)
class EthtoolWol:
    """What ``ethtool IFACE`` says about Wake-on-LAN (None: the driver reports nothing)."""

    supports: str | None
    wake_on: str | None

    @property
    def magic_capable(self) -> bool:
        """Return whether the card can wake on a magic packet (mode g)."""
        return self.supports is not None and "g" in self.supports

    @property
    def magic_armed(self) -> bool:
        """Return whether a magic packet would wake it now."""
        return self.wake_on is not None and "g" in self.wake_on


def parse_ethtool(text: str) -> EthtoolWol:
    """Return the "Supports Wake-on" and "Wake-on" values of ``ethtool IFACE`` output."""
    values = dict(_WOL_LINE.findall(text))
    return EthtoolWol(values.get("Supports Wake-on"), values.get("Wake-on"))


async def read_wol(session: SshSession, interface: str) -> tuple[EthtoolWol, dict[str, Any]]:
    """Run ``ethtool IFACE`` (as root) and return its Wake-on values and the command record."""
    result = await session.run(["ethtool", interface], sudo=True)
    if not result.ok:
        raise NicError(f"`{result.command}` exited {result.exit_status}: {result.stderr.strip()[-300:]}")
    return parse_ethtool(result.stdout), result.as_dict()


# ----------------------------------------------------------------------------- persistence files


def link_file(mac: str, enable: bool) -> str:
    """Return the systemd .link file that sets Wake-on-LAN of the card with MAC at every boot."""
    return (
        "# Written by mko (wol enable/disable): Wake-on-LAN of the network card with this MAC.\n"
        "# Only the first matching .link file applies, so the default naming policy is repeated.\n"
        "[Match]\n"
        f"MACAddress={mac}\n"
        "\n"
        "[Link]\n"
        "NamePolicy=keep kernel database onboard slot path\n"
        "AlternativeNamesPolicy=database onboard slot path\n"
        "MACAddressPolicy=persistent\n"
        f"WakeOnLan={'magic' if enable else 'off'}\n"
    )


def oneshot_unit(interface: str, enable: bool) -> str:
    """Return the oneshot unit that runs ``ethtool -s IFACE wol g|d`` at every boot."""
    device = f"sys-subsystem-net-devices-{interface}.device"
    return (
        "# Written by mko (wol enable/disable): Wake-on-LAN of this network card at every boot.\n"
        "[Unit]\n"
        f"Description=Wake-on-LAN for {interface} (mko)\n"
        f"Requires={device}\n"
        f"After={device}\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={ETHTOOL} -s {interface} wol {'g' if enable else 'd'}\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def link_path(interface: str) -> str:
    """Return where the .link file goes."""
    return f"/etc/systemd/network/50-mko-wol-{interface}.link"


def unit_name(interface: str) -> str:
    """Return the oneshot unit's name."""
    return f"mko-wol-{interface}.service"


async def _is_active(session: SshSession, unit: str) -> tuple[bool, int]:
    result = await session.run(["systemctl", "is-active", unit])
    return result.stdout.strip() == "active", result.exit_status


async def _network_manager_connection(session: SshSession, interface: str) -> str | None:
    """Return the NetworkManager connection of INTERFACE when NM manages it, else None."""
    active, _ = await _is_active(session, "NetworkManager")
    if not active:
        return None
    result = await session.run(
        ["nmcli", "-t", "-f", "GENERAL.STATE,GENERAL.CONNECTION", "device", "show", interface]
    )
    if not result.ok:
        return None
    values = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    state, connection = values.get("GENERAL.STATE", ""), values.get("GENERAL.CONNECTION", "").strip()
    if "unmanaged" in state or state.startswith(("10 ", "20 ")) or not connection or connection == "--":
        return None
    return connection


async def persist(session: SshSession, interface: str, mac: str, enable: bool) -> tuple[str, str, list[Any]]:
    """Make Wake-on survive reboots the way the node is set up; return (method, description, commands)."""
    commands: list[Any] = []

    async def run(argv: list[str], **kwargs: Any) -> None:
        result = await session.run(argv, sudo=True, **kwargs)
        commands.append(result.as_dict())
        if not result.ok:
            raise NicError(f"`{result.command}` exited {result.exit_status}: {result.stderr.strip()[-300:]}")

    connection = await _network_manager_connection(session, interface)
    if connection is not None:
        value = "magic" if enable else "none"
        await run(["nmcli", "connection", "modify", connection, "802-3-ethernet.wake-on-lan", value])
        return "NetworkManager", f"NetworkManager connection {connection!r}: wake-on-lan {value}", commands
    networkd, status = await _is_active(session, "systemd-networkd")
    if networkd:
        path = link_path(interface)
        await run(["tee", path], input=link_file(mac, enable))
        return (
            "systemd-networkd",
            f"systemd .link file {path} (WakeOnLan={'magic' if enable else 'off'})",
            commands,
        )
    if status in (0, 3, 4):  # systemctl answered: systemd runs, without networkd
        unit = unit_name(interface)
        await run(["tee", f"/etc/systemd/system/{unit}"], input=oneshot_unit(interface, enable))
        await run(["systemctl", "daemon-reload"])
        await run(["systemctl", "enable", unit])
        return "systemd-unit", f"oneshot unit {unit} (enabled, runs ethtool at boot)", commands
    return "none", "not persistent: the node runs neither NetworkManager nor systemd", commands


# ----------------------------------------------------------------------------- MAC collection


@dataclass
class NodeNetwork:
    """What one node reported, or why it could not."""

    node_id: int
    hostname: str
    interfaces: list[Interface] = field(default_factory=list)
    choice: Choice | None = None
    error: str | None = None
    duration: float = 0.0


async def _read_node(target: SshTarget, settings: Settings, node_ip: str) -> NodeNetwork:
    started = asyncio.get_running_loop().time()
    facts = NodeNetwork(target.node_id or 0, target.name)
    try:
        async with connect(target, settings) as session:
            facts.interfaces = await read_interfaces(session)
        facts.choice = choose_interface(facts.interfaces, node_ip)
    except MkoError as exc:
        facts.error = str(exc)
    facts.duration = asyncio.get_running_loop().time() - started
    return facts


def _nodes_for(session: Session, node_ids: Sequence[int] | None) -> list[Node]:
    if node_ids is None:
        return inventory.list_nodes(session)
    if not node_ids:
        raise InputError("node_ids", "give at least one node id (or none at all for every node)")
    unique = sorted(set(node_ids))
    return [inventory.get_node(session, node_id) for node_id in unique]


def apply_network_facts(
    session: Session, node: Node, facts: NodeNetwork, *, overwrite: bool
) -> dict[str, Any]:
    """Store what a node reported (MAC only when empty, same, or ``overwrite``); return its result row."""
    row: dict[str, Any] = {
        "node_id": node.id,
        "hostname": node.hostname,
        "state": "failed",
        "interface": None,
        "mac": None,
        "previous_mac": node.wol_mac_address,
        "address": None,
        "prefix_len": None,
        "reason": None,
        "interfaces": [i.as_dict() for i in facts.interfaces],
        "error": facts.error,
        "duration": round(facts.duration, 3),
    }
    if facts.interfaces:
        node.nic_interfaces = row["interfaces"]
        node.nic_collected_at = utcnow()
    choice = facts.choice
    if choice is None:
        session.commit()
        return row
    row |= {
        "interface": choice.interface.name,
        "mac": choice.mac,
        "address": choice.address,
        "prefix_len": choice.prefix_len,
        "reason": choice.reason,
    }
    other = session.scalars(
        select(Node).where(Node.wol_mac_address == choice.mac, Node.id != node.id)
    ).first()
    if other is not None:
        row["state"] = "conflict"
        row["error"] = f"MAC {choice.mac} already belongs to node {other.id} ({other.hostname})"
        session.commit()
        return row
    if node.wol_mac_address is None:
        row["state"] = "collected"
    elif node.wol_mac_address == choice.mac:
        row["state"] = "unchanged"
    elif overwrite:
        row["state"] = "updated"
    else:
        row["state"] = "differs"
        row["error"] = (
            f"the node reports {choice.mac} on {choice.interface.name}, the inventory has "
            f"{node.wol_mac_address}; not replaced (use --overwrite)"
        )
        session.commit()
        return row
    node.wol_mac_address = choice.mac
    node.nic_interface = choice.interface.name
    if choice.prefix_len is not None:
        node.wol_prefix_len = choice.prefix_len
    session.commit()
    return row


_ROW_STATUS = {
    "collected": OperationStatus.SUCCEEDED,
    "unchanged": OperationStatus.SUCCEEDED,
    "updated": OperationStatus.SUCCEEDED,
    "differs": OperationStatus.SUCCEEDED,
    "conflict": OperationStatus.FAILED,
    "failed": OperationStatus.FAILED,
}


def describe_row(row: dict[str, Any]) -> str:
    """Return one line about a node's collection result."""
    if row["state"] in ("failed", "conflict"):
        return str(row["error"])
    text = f"{row['state']}: {row['mac']} on {row['interface']}"
    if row["prefix_len"] is not None:
        text += f", /{row['prefix_len']}"
    if row["state"] == "differs":
        text += f" (inventory has {row['previous_mac']}; not replaced, use --overwrite)"
    elif row["state"] == "updated":
        text += f" (was {row['previous_mac']})"
    return text


async def collect_macs(
    sessions: sessionmaker[Session],
    settings: Settings,
    node_ids: Sequence[int] | None,
    *,
    overwrite: bool = False,
    actor: Actor,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> Operation:
    """Read every node's interfaces over SSH at once and store their MACs; one operation, a step each.

    Database work runs in worker threads with short sessions of its own, never across the SSH waits.
    """

    def begin(session: Session) -> tuple[int, dict[int, tuple[SshTarget, str]]]:
        nodes = _nodes_for(session, node_ids)
        if not nodes:
            raise ConflictError("there are no nodes to collect MAC addresses from")
        operation = start_operation(
            session,
            kind="wol_collect_mac",
            target_type="nodes",
            target_id=None,
            actor=actor,
            parameters={"node_ids": [n.id for n in nodes], "overwrite": overwrite},
            summary=f"collecting MAC addresses of {len(nodes)} node(s)",
        )
        return operation.id, {n.id: (SshTarget.of(n, settings), n.ip_address) for n in nodes}

    operation_id, targets = await in_thread_session(sessions, begin)
    started = utcnow()
    limit = asyncio.Semaphore(settings.ssh_parallel)

    async def one(node_id: int) -> NodeNetwork:
        target, node_ip = targets[node_id]
        async with limit:
            return await _read_node(target, settings, node_ip)

    def store(session: Session, *, facts: NodeNetwork) -> dict[str, Any]:
        node = inventory.get_node(session, facts.node_id)
        row = apply_network_facts(session, node, facts, overwrite=overwrite)
        record_step(
            session,
            session.get_one(Operation, operation_id),
            name=f"collect {node.hostname}",
            status=_ROW_STATUS[row["state"]],
            node_id=node.id,
            message=describe_row(row),
            detail=row,
            started_at=started,
        )
        return row

    rows: list[dict[str, Any]] = []
    try:
        for future in asyncio.as_completed([one(node_id) for node_id in targets]):
            facts = await future
            row = await in_thread_session(sessions, functools.partial(store, facts=facts))
            rows.append(row)
            if on_result is not None:
                on_result(row)
    except asyncio.CancelledError:
        # Here, not in a worker thread: the task is being cancelled and must record that before it ends.
        with sessions() as session:
            operation = session.get_one(Operation, operation_id)
            finish_operation(session, operation, status=OperationStatus.CANCELLED, summary="cancelled")
        raise
    rows.sort(key=lambda r: r["node_id"])
    return await in_thread_session(
        sessions, lambda session: _finish_collect(session, get_operation(session, operation_id), rows)
    )


def _finish_collect(session: Session, operation: Operation, rows: list[dict[str, Any]]) -> Operation:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    good = sum(counts.get(s, 0) for s in ("collected", "unchanged", "updated", "differs"))
    summary = f"{good}/{len(rows)} node(s) read: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    bad = [f"{r['hostname']}: {r['error']}" for r in rows if r["state"] in ("failed", "conflict", "differs")]
    if bad:
        summary += "; " + "; ".join(bad)
    if good == len(rows):
        status = OperationStatus.SUCCEEDED
    elif good:
        status = OperationStatus.PARTIAL
    else:
        status = OperationStatus.FAILED
    return finish_operation(session, operation, status=status, summary=summary, result={"nodes": rows})


# ----------------------------------------------------------------------------- Wake-on enable/disable


@dataclass
class WolChange:
    """The outcome of ``wol enable|disable``: the node as stored, and the operation that did it."""

    node: Node
    operation: Operation
    nic: dict[str, Any] | None


def nic_status(node: Node) -> dict[str, Any]:
    """Return the NIC's Wake-on state as last read from the node (all None until it was read)."""
    supported = node.nic_wol_supported
    return {
        "interface": node.nic_interface,
        "supports_wake_on": supported,
        "wake_on": node.nic_wol_state,
        "magic_packet_capable": None if supported is None else "g" in supported,
        "armed": None if node.nic_wol_state is None else "g" in node.nic_wol_state,
        "persistence": node.nic_wol_persistence,
        "checked_at": node.nic_checked_at,
        "interfaces_collected_at": node.nic_collected_at,
    }


async def set_nic_wol(
    sessions: sessionmaker[Session],
    settings: Settings,
    node_id: int,
    *,
    enable: bool,
    actor: Actor,
    flag_only: bool = False,
) -> WolChange:
    """``wol enable|disable``: configure the node's card over SSH, persist, read back, then set the flag.

    Any failure (unreachable node, unknown host key, a card without magic-packet support, a read-back
    that disagrees) fails the operation and leaves the flag as it was; what was read from the card is
    still stored. ``flag_only`` changes only mko's flag, for a node that cannot be reached now.
    Database work runs in worker threads with short sessions of its own, never across the SSH waits.
    """
    verb = "enable" if enable else "disable"

    def begin(session: Session) -> tuple[Node, int]:
        node = inventory.get_node(session, node_id)
        operation = start_operation(
            session,
            kind=f"wol_{verb}",
            target_type="node",
            target_id=node.id,
            actor=actor,
            parameters={"wol_enabled": enable, "flag_only": flag_only},
            summary=f"{verb} Wake-on-LAN on {node.hostname}",
        )
        return node, operation.id

    node, operation_id = await in_thread_session(sessions, begin)
    if flag_only or node.wol_method not in MAGIC_METHODS:
        why = (
            "flag only, as asked: the network card was not touched"
            if flag_only
            else f"method {node.wol_method.value}: the node is not woken by its network card"
        )
        return await in_thread_session(
            sessions,
            lambda session: _set_flag(session, operation_id, node_id, enable, why, nic=None, card={}),
        )
    target = SshTarget.of(node, settings)
    steps = _Steps(sessions, operation_id, node.id)
    nic: dict[str, Any] = {}
    card: dict[str, Any] = {}  # what was read from the network card, stored on the node in the end
    try:
        async with connect(target, settings) as remote:
            await steps.ok("connect", f"{target.user}@{target.address}, host key verified")
            await _arm(remote, sessions, steps, node, target.label, enable, nic, card)
    except (SshError, NicError, UnsupportedActionError) as exc:
        summary = f"{verb} failed, flag unchanged: {exc}"
        reason = str(exc)

        def fail(session: Session) -> None:
            _update_node(session, node_id, card)
            steps.record(session, "configure network card", OperationStatus.FAILED, reason)
            operation = session.get_one(Operation, operation_id)
            finish_operation(
                session, operation, status=OperationStatus.FAILED, summary=summary, result={"nic": nic}
            )

        await in_thread_session(sessions, fail)
        log.warning("node %s: wol %s failed: %s", node_id, verb, exc)
        message = f"{exc} (operation {operation_id})"
        if isinstance(exc, SshUnreachableError):
            message += '; to change only mko\'s flag: --flag-only (API: {"flag_only": true})'
        if isinstance(exc, UnsupportedActionError):
            raise UnsupportedActionError(message) from exc
        raise NicError(message) from exc
    why = nic.get("persistence_detail", "")
    return await in_thread_session(
        sessions, lambda session: _set_flag(session, operation_id, node_id, enable, why, nic=nic, card=card)
    )


async def _arm(
    remote: SshSession,
    sessions: sessionmaker[Session],
    steps: _Steps,
    node: Node,
    label: str,
    enable: bool,
    nic: dict[str, Any],
    card: dict[str, Any],
) -> None:
    """Find the node's card, read its Wake-on, and set it (``nic``, ``card``: what was found)."""
    interfaces = await read_interfaces(remote)
    interface, mac = _card_for(node, interfaces)
    other = await in_thread_session(sessions, lambda session: _mac_owner(session, mac, node.id))
    if other is not None:
        raise NicError(f"MAC {mac} of {interface.name} already belongs to node {other.id} ({other.hostname})")
    nic |= {"interface": interface.name, "mac": mac}
    await steps.ok(
        "find network card", f"{interface.name} has {mac}", {"interfaces": [i.as_dict() for i in interfaces]}
    )
    before, record = await read_wol(remote, interface.name)
    card |= _wol_fields(interface.name, before, None)
    nic |= {"supports_wake_on": before.supports, "wake_on_before": before.wake_on}
    await steps.ok("read Wake-on", f"Supports Wake-on: {before.supports}, Wake-on: {before.wake_on}", record)
    if enable and not before.magic_capable:
        shown = before.supports if before.supports is not None else "not reported by the driver"
        raise UnsupportedActionError(
            f"{label}: NIC {interface.name} cannot wake on magic packet (Supports Wake-on: {shown})"
        )
    if not enable and not before.supports:
        await steps.ok("nothing to disable", f"{interface.name} reports no Wake-on-LAN support")
    else:
        card |= await _configure_card(remote, steps, interface.name, mac, enable, nic)
    if node.wol_mac_address is None:
        card["wol_mac_address"] = mac  # what `wol collect-mac` would have stored


def _mac_owner(session: Session, mac: str, node_id: int) -> Node | None:
    """Another node that already has ``mac``."""
    return session.scalars(select(Node).where(Node.wol_mac_address == mac, Node.id != node_id)).first()


async def _configure_card(
    remote: SshSession, steps: _Steps, interface: str, mac: str, enable: bool, nic: dict[str, Any]
) -> dict[str, Any]:
    """Set Wake-on now, make it persistent, and read it back; the node's fields to store."""
    modes = "g" if enable else "d"
    result = await remote.run(["ethtool", "-s", interface, "wol", modes], sudo=True)
    if not result.ok:
        raise NicError(f"`{result.command}` exited {result.exit_status}: {result.stderr.strip()[-300:]}")
    await steps.ok(f"ethtool -s {interface} wol {modes}", "applied", result.as_dict())
    method, description, commands = await persist(remote, interface, mac, enable)
    nic |= {"persistence": method, "persistence_detail": description}
    status = OperationStatus.SUCCEEDED if method != "none" else OperationStatus.PARTIAL
    await steps.add("persist", status, description, {"commands": commands})
    after, record = await read_wol(remote, interface)
    nic["wake_on"] = after.wake_on
    if after.magic_armed != enable:
        raise NicError(f"read back Wake-on: {after.wake_on} on {interface}, expected {modes}")
    await steps.ok("read back", f"Wake-on: {after.wake_on}", record)
    return _wol_fields(interface, after, method)


def _card_for(node: Node, interfaces: list[Interface]) -> tuple[Interface, str]:
    """Return the card with the node's MAC (or, with no MAC stored yet, the one collect-mac picks)."""
    if node.wol_mac_address is not None:
        for interface in interfaces:
            if interface.mac == node.wol_mac_address:
                return interface, node.wol_mac_address
        found = ", ".join(f"{i.name}={i.mac}" for i in interfaces if i.mac) or "none"
        raise NicError(
            f"no interface of the node has the stored MAC {node.wol_mac_address} (found {found}); "
            f"run `wol collect-mac --node-ids {node.id} --overwrite` if the card was replaced"
        )
    choice = choose_interface(interfaces, node.ip_address)
    return choice.interface, choice.mac


def _wol_fields(interface: str, wol: EthtoolWol, persistence: str | None) -> dict[str, Any]:
    """The node's NIC fields for what ethtool reported."""
    fields = {
        "nic_interface": interface,
        "nic_wol_supported": wol.supports if wol.supports is not None else "",
        "nic_wol_state": wol.wake_on if wol.wake_on is not None else "",
        "nic_checked_at": utcnow(),
    }
    if persistence is not None:
        fields["nic_wol_persistence"] = persistence
    return fields


def _update_node(session: Session, node_id: int, fields: dict[str, Any]) -> Node:
    node = inventory.get_node(session, node_id)
    for name, value in fields.items():
        setattr(node, name, value)
    session.commit()
    return node


def _set_flag(
    session: Session,
    operation_id: int,
    node_id: int,
    enable: bool,
    why: str,
    *,
    nic: dict[str, Any] | None,
    card: dict[str, Any],
) -> WolChange:
    node = _update_node(session, node_id, card)
    operation = session.get_one(Operation, operation_id)
    try:
        inventory.configure_wol(session, node.id, WolConfigure(wol_enabled=enable))
    except MkoError as exc:
        record_step(session, operation, name="orchestrator flag", status=OperationStatus.FAILED,
                    node_id=node.id, message=str(exc))  # fmt: skip
        finish_operation(session, operation, status=OperationStatus.FAILED, summary=str(exc))
        raise
    partial = nic is not None and nic.get("persistence") == "none"
    record_step(
        session,
        operation,
        name="orchestrator flag",
        status=OperationStatus.SUCCEEDED,
        node_id=node.id,
        message=f"wol_enabled={str(enable).lower()}",
    )
    state = "enabled" if enable else "disabled"
    summary = f"Wake-on-LAN {state} on {node.hostname}" + (f"; {why}" if why else "")
    finish_operation(
        session,
        operation,
        status=OperationStatus.PARTIAL if partial else OperationStatus.SUCCEEDED,
        summary=summary,
        result={"wol_enabled": enable, "nic": nic},
    )
    # With its cluster loaded: callers show the node (its wake site) after this session is closed.
    node = session.get_one(Node, node_id, options=[joinedload(Node.cluster)], populate_existing=True)
    return WolChange(node, operation, nic)


class _Steps:
    """Records the steps of a NIC configuration as they happen, each in a worker thread of its own."""

    def __init__(self, sessions: sessionmaker[Session], operation_id: int, node_id: int) -> None:
        self.sessions = sessions
        self.operation_id = operation_id
        self.node_id = node_id
        self.started = utcnow()

    def record(
        self,
        session: Session,
        name: str,
        status: OperationStatus,
        message: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record a step in ``session``."""
        operation = session.get_one(Operation, self.operation_id)
        record_step(session, operation, name=name, status=status, node_id=self.node_id,
                    message=message, detail=detail, started_at=self.started)  # fmt: skip
        self.started = utcnow()

    async def add(
        self, name: str, status: OperationStatus, message: str, detail: dict[str, Any] | None = None
    ) -> None:
        """Record a step now."""
        await in_thread_session(
            self.sessions, lambda session: self.record(session, name, status, message, detail)
        )

    async def ok(self, name: str, message: str, detail: dict[str, Any] | None = None) -> None:
        """Record a step that succeeded."""
        await self.add(name, OperationStatus.SUCCEEDED, message, detail)
