"""Choosing the card to wake from `ip -j` output and reading ethtool (persistence: its own test file)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mko.nic.ethtool import parse_ethtool
from mko.nic.interfaces import Interface, choose_interface, parse_interfaces
from mko.platform.errors import NicError


def _link(name: str, mac: str | None, kind: str | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ifname": name,
        "link_type": "loopback" if name == "lo" else "ether",
        "operstate": extra.pop("operstate", "UP"),
    }
    if mac is not None:
        entry["address"] = mac
    if kind is not None:
        entry["linkinfo"] = {"info_kind": kind}
    entry.update(extra)
    return entry


def _addr(name: str, *cidrs: str) -> dict[str, Any]:
    info = []
    for cidr in cidrs:
        local, prefix = cidr.split("/")
        info.append({"family": "inet6" if ":" in local else "inet", "local": local, "prefixlen": int(prefix)})
    return {"ifname": name, "addr_info": info}


def _parse(links: list[dict[str, Any]], addrs: list[dict[str, Any]], dev: str | None) -> list[Interface]:
    routes = [{"dst": "default", "gateway": "192.168.1.1", "dev": dev}] if dev else []
    return parse_interfaces(json.dumps(links), json.dumps(addrs), json.dumps(routes))


LO = _link("lo", "00:00:00:00:00:00")
LO_ADDR = _addr("lo", "127.0.0.1/8", "::1/128")


def test_plain_host_with_container_noise_picks_the_physical_card() -> None:
    interfaces = _parse(
        [
            LO,
            _link("enp3s0", "3C:EC:EF:00:11:22"),
            _link("docker0", "02:42:ac:11:00:01", "bridge"),
            _link("cni0", "0a:58:0a:01:00:01", "bridge"),
            _link("flannel.1", "6e:11:22:33:44:55", "vxlan"),
            _link("vethabc123", "aa:bb:cc:00:00:01", "veth", master="cni0"),
            _link("cali12345", "ee:ee:ee:ee:ee:ee", "veth"),
        ],
        [
            LO_ADDR,
            _addr("enp3s0", "192.168.1.20/24"),
            _addr("docker0", "172.17.0.1/16"),
            _addr("cni0", "10.1.0.1/24"),
        ],
        "enp3s0",
    )
    choice = choose_interface(interfaces, "192.168.1.20")
    assert (choice.interface.name, choice.mac, choice.prefix_len, choice.address) == (
        "enp3s0",
        "3c:ec:ef:00:11:22",
        24,
        "192.168.1.20/24",
    )
    assert choice.reason == "carries 192.168.1.20"
    kinds = {i.name: (i.kind, i.virtual) for i in interfaces}
    assert kinds["docker0"] == ("bridge", True) and kinds["vethabc123"] == ("veth", True)
    assert kinds["enp3s0"] == ("ether", False) and kinds["lo"] == ("loopback", True)
    assert next(i for i in interfaces if i.name == "lo").mac is None


def test_inventory_address_wins_over_the_default_route() -> None:
    interfaces = _parse(
        [LO, _link("eno1", "3c:ec:ef:00:00:01"), _link("eno2", "3c:ec:ef:00:00:02")],
        [_addr("eno1", "203.0.113.5/28"), _addr("eno2", "10.10.0.7/22")],
        "eno1",
    )
    choice = choose_interface(interfaces, "10.10.0.7")
    assert (choice.interface.name, choice.prefix_len) == ("eno2", 22)
    # Without an inventory address on the node (NAT, DNS name), the default route decides.
    routed = choose_interface(interfaces, "198.51.100.1")
    assert (routed.interface.name, routed.prefix_len, routed.reason) == (
        "eno1",
        28,
        "carries the default route",
    )


def test_bridge_bond_and_vlan_are_looked_through_to_the_card() -> None:
    bridged = _parse(
        [
            LO,
            _link("enp1s0", "3c:ec:ef:aa:00:01", master="br0", linkinfo={"info_slave_kind": "bridge"}),
            _link("br0", "3c:ec:ef:aa:00:01", "bridge"),
        ],
        [_addr("br0", "192.168.10.5/24")],
        "br0",
    )
    choice = choose_interface(bridged, "192.168.10.5")
    assert (choice.interface.name, choice.prefix_len) == ("enp1s0", 24)
    assert choice.reason == "network card under br0, which carries 192.168.10.5"

    bond_port = {
        "info_slave_kind": "bond",
        "info_slave_data": {"state": "ACTIVE", "perm_hwaddr": "3c:ec:ef:bb:00:02"},
    }
    bonded = _parse(
        [
            LO,
            # A bond gives both ports its own MAC; each card wakes on its permanent address.
            _link("eno2", "3c:ec:ef:bb:00:01", master="bond0", linkinfo=bond_port, operstate="DOWN"),
            _link(
                "eno1",
                "3c:ec:ef:bb:00:01",
                master="bond0",
                linkinfo={"info_slave_kind": "bond", "info_slave_data": {"perm_hwaddr": "3c:ec:ef:bb:00:01"}},
            ),
            _link("bond0", "3c:ec:ef:bb:00:01", "bond"),
            _link("bond0.20", "3c:ec:ef:bb:00:01", "vlan", link="bond0"),
        ],
        [_addr("bond0.20", "10.20.0.9/24")],
        "bond0.20",
    )
    choice = choose_interface(bonded, "10.20.0.9")
    assert (choice.interface.name, choice.mac) == ("eno1", "3c:ec:ef:bb:00:01")  # the port that is up
    assert {i.name: i.mac for i in bonded}["eno2"] == "3c:ec:ef:bb:00:02"
    assert choice.prefix_len == 24 and "bond0.20" in choice.reason


def test_virtual_interface_is_chosen_only_when_it_is_the_only_one() -> None:
    interfaces = _parse(
        [LO, _link("veth0", "02:13:00:00:00:11", "veth")], [_addr("veth0", "10.213.0.11/24")], "veth0"
    )
    choice = choose_interface(interfaces, "10.213.0.11")
    assert choice.interface.name == "veth0" and "the only one there is" in choice.reason
    # A single card but the default route over a VPN: the card still wins.
    vpn = _parse(
        [
            LO,
            _link("eth0", "52:54:00:12:34:56"),
            {"ifname": "wg0", "link_type": "none", "operstate": "UNKNOWN"},
        ],
        [_addr("eth0", "192.168.5.5/24"), _addr("wg0", "10.99.0.2/32")],
        "wg0",
    )
    choice = choose_interface(vpn, "10.99.0.2")
    assert (choice.interface.name, choice.reason, choice.prefix_len) == ("eth0", "the only network card", 24)


def test_no_card_at_all_is_an_error_naming_what_was_found() -> None:
    interfaces = _parse(
        [LO, {"ifname": "tun0", "link_type": "none", "operstate": "UNKNOWN"}],
        [_addr("tun0", "10.8.0.2/24")],
        "tun0",
    )
    with pytest.raises(NicError, match=r"no network card carries 10\.8\.0\.2; interfaces: tun0 \(none\)"):
        choose_interface(interfaces, "10.8.0.2")


@pytest.mark.parametrize(
    ("text", "what"),
    [("not json", "did not print JSON"), ('{"a": 1}', "not a list")],
)
def test_garbage_from_ip_is_reported(text: str, what: str) -> None:
    with pytest.raises(NicError, match=what):
        parse_interfaces(text, "[]", "[]")


ETHTOOL_OUTPUT = """Settings for eno1:
\tSupported ports: [ TP ]
\tSpeed: 1000Mb/s
\tSupports Wake-on: pumbg
\tWake-on: d
        Current message level: 0x00000007 (7)
\t\t\t       drv probe link
\tLink detected: yes
"""


def test_ethtool_output() -> None:
    wol = parse_ethtool(ETHTOOL_OUTPUT)
    assert (wol.supports, wol.wake_on, wol.magic_capable, wol.magic_armed) == ("pumbg", "d", True, False)
    armed = parse_ethtool(ETHTOOL_OUTPUT.replace("Wake-on: d", "Wake-on: g"))
    assert armed.magic_armed
    # A driver without Wake-on support (or ethtool without root) prints no Wake-on lines at all.
    none = parse_ethtool("Settings for veth0:\n\tLink detected: yes\n")
    assert (none.supports, none.wake_on, none.magic_capable) == (None, None, False)
