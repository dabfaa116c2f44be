"""A node's network interfaces from ``ip -json``: which are physical, and which one
carries the node's address (its Wake-on-LAN card)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mko.platform import validation
from mko.platform.errors import InputError, NicError
from mko.ssh.client import SshSession

__all__ = ["Choice", "Interface", "choose_interface", "parse_interfaces"]


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
