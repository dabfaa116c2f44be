"""The virtual lab itself: magic packets sent from the orchestrator namespace reach the nodes' cards."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable

import pytest

from mko.lab.harness import RunningLab
from mko.lab.netns import Lab, NodeSpec, cleanup_stale, enter_netns, list_netns
from mko.lab.recorder import BootOnWake, find_magic, parse_frame

LabFactory = Callable[..., RunningLab]

pytestmark = pytest.mark.integration

TIMEOUT = 10.0  # generous: only ever waited on through events, never slept
ETH_P_WOL = 0x0842
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


# --------------------------------------------------------------------------- a tiny local sender


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def magic(mac: str, password: bytes = b"") -> bytes:
    return b"\xff" * 6 + mac_bytes(mac) * 16 + password


def send_udp(lab: Lab, payload: bytes, dst: str, port: int = 9, *, bind_device: bool = False) -> None:
    with enter_netns(lab.orch), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if bind_device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, lab.orch_interface.encode())
        sock.sendto(payload, (dst, port))


def send_frame(lab: Lab, dst_mac: str, payload: bytes) -> None:
    frame = mac_bytes(dst_mac) + mac_bytes(lab.orch_mac) + ETH_P_WOL.to_bytes(2) + payload
    with enter_netns(lab.orch), socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((lab.orch_interface, 0))
        sock.send(frame)


def banner(lab: Lab, ip: str, port: int = 2222) -> bytes:
    with enter_netns(lab.orch), socket.create_connection((ip, port), timeout=TIMEOUT) as conn:
        return conn.recv(100)


def netns_of(path: str) -> int:
    return os.stat(path).st_ino


# --------------------------------------------------------------------------- layout


def test_layout_addresses_and_routes(lab: RunningLab) -> None:
    net = lab.lab
    assert (net.orch_ip, net.orch_interface, net.prefix_len, net.broadcast) == (
        "10.213.0.1",
        "veth0",
        24,
        "10.213.0.255",
    )
    assert [(n.name, n.ip, n.mac, n.interface) for n in net.nodes] == [
        ("n1", "10.213.0.11", "02:13:00:00:00:11", "veth0"),
        ("n2", "10.213.0.12", "02:13:00:00:00:12", "veth0"),
        ("n3", "10.213.0.13", "02:13:00:00:00:13", "veth0"),
    ]
    assert set(net.namespaces) <= set(list_netns())

    def ip(ns: str, *args: str) -> str:
        return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True).stdout

    # The orchestrator has no default route on purpose; nodes route via the orchestrator.
    assert ip(net.orch, "route", "show", "default") == ""
    for node in net.nodes:
        assert f"default via {net.orch_ip} dev veth0" in ip(node.netns, "route", "show", "default")
        assert f"link/ether {node.mac}" in ip(node.netns, "link", "show", "veth0")
    for ns in net.namespaces:
        assert ",UP," in ip(ns, "link", "show", "lo"), ns


def test_enter_netns_moves_only_this_thread_and_sockets_stay(lab: RunningLab) -> None:
    net = lab.lab
    host_ns = netns_of("/proc/thread-self/ns/net")
    seen_by_other_thread: list[int] = []
    with enter_netns(net.orch):
        assert netns_of("/proc/thread-self/ns/net") == netns_of(f"/run/netns/{net.orch}")
        other = threading.Thread(
            target=lambda: seen_by_other_thread.append(netns_of("/proc/thread-self/ns/net"))
        )
        other.start()
        other.join()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        assert netns_of("/proc/thread-self/ns/net") == host_ns
        # Threads started inside inherit the namespace.
        assert seen_by_other_thread == [netns_of(f"/run/netns/{net.orch}")]
        # 10.213.0.1 exists only in the orch namespace: the socket still lives there.
        sock.bind((net.orch_ip, 0))


def test_asyncio_loop_in_orch_namespace_sends_broadcast(lab: RunningLab) -> None:
    net = lab.lab
    target = lab.nodes[0]

    async def send() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, family=socket.AF_INET, allow_broadcast=True
        )
        try:
            transport.sendto(magic(target.mac), (net.broadcast, 9))
        finally:
            transport.close()

    with enter_netns(net.orch):
        asyncio.run(send())
    for node in lab.nodes:
        assert node.recorder.wait_for(1, TIMEOUT, mac=target.mac)


# --------------------------------------------------------------------------- what the cards see


def test_directed_broadcast_reaches_every_node(lab: RunningLab) -> None:
    net = lab.lab
    first, third = lab.nodes[0], lab.nodes[2]
    send_udp(net, magic(first.mac), net.broadcast, 9)
    send_udp(net, magic(third.mac), net.broadcast, 40000)  # any port counts, as for a real card
    for node in lab.nodes:
        assert node.recorder.wait_for(2, TIMEOUT), node.name
        packets = node.recorder.packets
        assert [(p.target_mac, p.udp_port) for p in packets] == [(first.mac, 9), (third.mac, 40000)]
        for p in packets:
            assert p.kind == "udp"
            assert (p.ip_src, p.ip_dst) == (net.orch_ip, net.broadcast)
            assert (p.frame_dst_mac, p.frame_src_mac) == (BROADCAST_MAC, net.orch_mac)
            assert p.secureon is None
        assert node.recorder.packets_for(first.mac.upper()) == packets[:1]


def test_unicast_raw_frame_reaches_only_its_node(lab: RunningLab) -> None:
    net = lab.lab
    n1, n2, n3 = lab.nodes
    send_frame(net, n2.mac, magic(n2.mac))
    # A MAC nobody has: the bridge floods it to every port, and every card must ignore it.
    send_frame(net, "02:13:00:00:00:99", magic("02:13:00:00:00:99"))
    # Marker, sent last on the same path: once every node has it, the earlier frames have arrived too.
    send_frame(net, BROADCAST_MAC, magic(n3.mac))
    for node in lab.nodes:
        assert node.recorder.wait_for(1, TIMEOUT, mac=n3.mac), node.name
    [got] = n2.recorder.packets_for(n2.mac)
    assert (got.kind, got.frame_dst_mac, got.frame_src_mac) == ("ethernet", n2.mac, net.orch_mac)
    assert (got.ip_src, got.ip_dst, got.udp_port, got.secureon) == (None, None, None, None)
    for node in (n1, n3):
        assert node.recorder.packets_for(n2.mac) == []
    for node in lab.nodes:
        assert node.recorder.packets_for("02:13:00:00:00:99") == []
        assert {p.kind for p in node.recorder.packets_for(n3.mac)} == {"ethernet"}


def test_secureon_passwords_are_captured(lab: RunningLab) -> None:
    net = lab.lab
    node = lab.nodes[0]
    send_udp(net, magic(node.mac, bytes.fromhex("a1b2c3d4e5f6")), net.broadcast)
    send_udp(net, magic(node.mac, bytes([192, 168, 1, 2])), net.broadcast)
    send_frame(net, BROADCAST_MAC, magic(node.mac, bytes.fromhex("0102030405ff")))
    assert node.recorder.wait_for(3, TIMEOUT)
    assert [(p.kind, p.secureon) for p in node.recorder.packets] == [
        ("udp", "a1:b2:c3:d4:e5:f6"),
        ("udp", "c0:a8:01:02"),
        ("ethernet", "01:02:03:04:05:ff"),
    ]


def test_limited_broadcast_needs_a_source_interface(lab: RunningLab) -> None:
    net = lab.lab
    with pytest.raises(OSError, match="unreachable") as failure:
        send_udp(net, magic(lab.nodes[0].mac), "255.255.255.255")
    assert failure.value.errno == errno.ENETUNREACH
    send_udp(net, magic(lab.nodes[0].mac), "255.255.255.255", bind_device=True)
    for node in lab.nodes:
        assert node.recorder.wait_for(1, TIMEOUT), node.name
        [got] = node.recorder.packets
        assert (got.ip_dst, got.frame_dst_mac, got.target_mac) == (
            "255.255.255.255",
            BROADCAST_MAC,
            lab.nodes[0].mac,
        )


def test_burst_is_counted_without_loss(lab: RunningLab) -> None:
    net = lab.lab
    count = 3000
    payload = magic(lab.nodes[1].mac)
    with enter_netns(net.orch), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for _ in range(count):
            sock.sendto(payload, (net.broadcast, 9))
    for node in lab.nodes:
        assert node.recorder.wait_for(count, TIMEOUT, mac=lab.nodes[1].mac), (
            node.name,
            len(node.recorder.packets),
            node.recorder.dropped,
        )
        assert node.recorder.dropped == 0


def test_clear_forgets_packets(lab: RunningLab) -> None:
    net = lab.lab
    node = lab.nodes[0]
    send_udp(net, magic(node.mac), net.broadcast)
    assert node.recorder.wait_for(1, TIMEOUT)
    lab.clear()
    assert node.recorder.packets == []
    assert node.power.state == "off"
    send_udp(net, magic(lab.nodes[1].mac), net.broadcast)
    assert node.recorder.wait_for(1, TIMEOUT)
    assert [p.target_mac for p in node.recorder.packets] == [lab.nodes[1].mac]


def test_parser_handles_ipv6_vlan_and_offset_magic() -> None:
    # Frames no test above sends through the lab, checked directly against the recorder's parser.
    target = "02:13:00:00:00:12"
    body = b"junk" + magic(target)
    udp = (40000).to_bytes(2) + (9).to_bytes(2) + (8 + len(body)).to_bytes(2) + b"\0\0" + body
    src, dst = socket.inet_pton(socket.AF_INET6, "fe80::1"), socket.inet_pton(socket.AF_INET6, "ff02::1")
    ipv6 = b"\x60\0\0\0" + len(udp).to_bytes(2) + bytes([17, 64]) + src + dst + udp
    eth = mac_bytes("33:33:00:00:00:01") + mac_bytes("02:13:00:00:00:01")
    got = parse_frame(eth + b"\x86\xdd" + ipv6, 1.0)
    assert got is not None
    assert (got.kind, got.ip_src, got.ip_dst, got.udp_port, got.target_mac) == (
        "udp",
        "fe80::1",
        "ff02::1",
        9,
        target,
    )
    tagged = eth + b"\x81\x00\x00\x05" + ETH_P_WOL.to_bytes(2) + magic(target, b"\x01\x02\x03\x04")
    got = parse_frame(tagged, 2.0)
    assert got is not None
    assert (got.kind, got.secureon) == ("ethernet", "01:02:03:04")
    assert find_magic(b"\xff" * 6 + mac_bytes(target) * 15) is None
    assert parse_frame(eth + b"\x08\x06" + magic(target), 3.0) is None  # ARP frames carry no magic


# --------------------------------------------------------------------------- power simulation


def test_node_boots_on_its_magic_packet(lab: RunningLab) -> None:
    net = lab.lab
    n1, n2 = lab.nodes[0], lab.nodes[1]
    with pytest.raises(ConnectionRefusedError):
        banner(net, n1.ip)
    assert (n1.power.state, n1.power.booted_at) == ("off", None)

    send_udp(net, magic(n1.mac), net.broadcast)
    assert n1.power.wait_booted(TIMEOUT)
    assert banner(net, n1.ip) == b"SSH-2.0-mkolab\r\n"
    assert n1.power.boot_count == 1
    assert n1.power.wake_packets == 1
    assert n1.power.wake_requested_at is not None
    assert n1.power.booted_at is not None
    assert n1.power.booted_at >= n1.power.wake_requested_at + n1.power.boot_delay

    # n2's card saw the packet (listeners run before wait_for returns) and stayed off.
    assert n2.recorder.wait_for(1, TIMEOUT, mac=n1.mac)
    assert (n2.power.state, n2.power.wake_packets) == ("off", 0)
    with pytest.raises(ConnectionRefusedError):
        banner(net, n2.ip)

    n1.power.power_off()
    with pytest.raises(ConnectionRefusedError):
        banner(net, n1.ip)
    assert n1.power.wake_packets == 0
    assert n1.power.booted_at is None
    send_frame(net, n1.mac, magic(n1.mac))
    assert n1.power.wait_booted(TIMEOUT)
    assert n1.power.boot_count == 2
    assert banner(net, n1.ip) == b"SSH-2.0-mkolab\r\n"


def test_client_that_speaks_first_still_reads_the_banner(lab: RunningLab) -> None:
    net = lab.lab
    node = lab.nodes[2]
    node.power.power_on()
    assert node.power.wait_booted(TIMEOUT)
    with enter_netns(net.orch), socket.create_connection((node.ip, 2222), timeout=TIMEOUT) as conn:
        conn.sendall(b"SSH-2.0-client\r\n")
        data = b""
        while chunk := conn.recv(100):
            data += chunk
    assert data == b"SSH-2.0-mkolab\r\n"


def test_unwakeable_node_never_boots(lab_factory: LabFactory) -> None:
    running = lab_factory([NodeSpec(), NodeSpec(wakeable=False)])
    net = running.lab
    awake, dead = running.nodes
    send_udp(net, magic(dead.mac), net.broadcast)
    send_udp(net, magic(awake.mac), net.broadcast)
    assert awake.power.wait_booted(TIMEOUT)
    assert dead.recorder.wait_for(1, TIMEOUT, mac=dead.mac)
    assert (dead.power.state, dead.power.wake_packets, dead.power.boot_count) == ("off", 1, 0)
    with pytest.raises(ConnectionRefusedError):
        banner(net, dead.ip)


def test_secureon_protected_node_needs_the_password(lab: RunningLab) -> None:
    net = lab.lab
    node = lab.nodes[0]
    # A stand-alone BootOnWake with its own recorder, on another port of the same node.
    with BootOnWake(node.netns, node.ip, 2223, node.mac, boot_delay=0, secureon="AA:BB:CC:DD:EE:FF") as power:
        send_udp(net, magic(node.mac), net.broadcast)
        send_udp(net, magic(node.mac, bytes.fromhex("aabbccddee00")), net.broadcast)
        assert power.recorder.wait_for(2, TIMEOUT)
        assert (power.state, power.wake_packets) == ("off", 0)
        send_udp(net, magic(node.mac, bytes.fromhex("aabbccddeeff")), net.broadcast)
        assert power.wait_booted(TIMEOUT)
        assert banner(net, node.ip, 2223) == b"SSH-2.0-mkolab\r\n"
    assert not power.recorder.running
    with pytest.raises(ConnectionRefusedError):
        banner(net, node.ip, 2223)


# --------------------------------------------------------------------------- teardown


def test_destroy_leaves_no_namespaces_processes_or_threads(lab_factory: LabFactory) -> None:
    threads_before = set(threading.enumerate())
    running = lab_factory(2)
    prefix = running.lab.prefix
    # A process inside a node (like an sshd would be): fork from a thread that is in the namespace.
    with enter_netns(running.nodes[0].netns):
        sleeper = subprocess.Popen(["sleep", "600"])
    try:
        send_udp(running.lab, magic(running.nodes[0].mac), running.lab.broadcast)
        assert running.nodes[0].power.wait_booted(TIMEOUT)
        running.close()
        assert sleeper.wait(timeout=TIMEOUT) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"{prefix}-" not in listed
    # No thread of the lab is left; a thread of an earlier test that was ending when this one began
    # (an operation's heartbeat, say) may have ended meanwhile, which is no leak of this lab's.
    assert set(threading.enumerate()) <= threads_before
    running.close()  # idempotent


def test_stale_lab_is_cleaned_up_on_create(unique_prefix: Callable[[], str]) -> None:
    prefix = unique_prefix()
    forgotten = Lab.create(prefix, 1)
    try:
        with Lab.create(prefix, 2) as again:
            assert [n.name for n in again.nodes] == ["n1", "n2"]
            assert sorted(n for n in list_netns() if n.startswith(f"{prefix}-")) == sorted(again.namespaces)
        assert not [n for n in list_netns() if n.startswith(f"{prefix}-")]
        Lab.create(prefix, 1)  # left behind on purpose
        assert sorted(cleanup_stale(prefix)) == sorted(forgotten.namespaces)
    finally:
        cleanup_stale(prefix)
    assert not [n for n in list_netns() if n.startswith(f"{prefix}-")]
