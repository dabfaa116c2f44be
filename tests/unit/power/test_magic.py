"""Magic packets: byte layout, validation, and real sends over loopback (UDP and raw Ethernet on lo)."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mko.platform.errors import FatalPowerError, InputError, RetryablePowerError
from mko.power.magic import (
    ETH_P_WOL,
    MagicPacketSender,
    SendResult,
    WakeTarget,
    build_ethernet_frame,
    build_magic_packet,
    send_magic_packet,
    socket_open_error,
    subnet_broadcast,
)

MAC = "02:11:22:33:44:55"
MAC_BYTES = bytes.fromhex("021122334455")
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (AF_PACKET, namespaces, capabilities)")


# --- building -------------------------------------------------------------------------------------


def test_magic_packet_layout_byte_by_byte() -> None:
    packet = build_magic_packet(MAC)
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    for i in range(16):
        assert packet[6 + 6 * i : 12 + 6 * i] == MAC_BYTES
    assert packet == b"\xff" * 6 + MAC_BYTES * 16


@pytest.mark.parametrize(
    "mac",
    [
        "02:11:22:33:44:55",
        "02-11-22-33-44-55",
        "0211.2233.4455",
        "021122334455",
        "02:11:22:33:44:55".upper(),
        "  02-11-22-33-44-55 ",
    ],
)
def test_every_accepted_mac_form_builds_the_same_packet(mac: str) -> None:
    assert build_magic_packet(mac) == b"\xff" * 6 + MAC_BYTES * 16


@pytest.mark.parametrize(
    "mac",
    ["", "nonsense", "02:11:22:33:44", "02:11:22:33:44:55:66", "01:00:5e:00:00:01", "00:00:00:00:00:00"],
)
def test_invalid_macs_are_input_errors(mac: str) -> None:
    with pytest.raises(InputError):
        build_magic_packet(mac)


@pytest.mark.parametrize(
    ("secureon", "tail"),
    [
        ("aa:bb:cc:dd:ee:ff", bytes.fromhex("aabbccddeeff")),
        ("AA-BB-CC-DD-EE-FF", bytes.fromhex("aabbccddeeff")),
        ("aa:bb:cc:dd", bytes.fromhex("aabbccdd")),
        ("192.168.1.10", bytes([192, 168, 1, 10])),
    ],
)
def test_secureon_password_is_appended(secureon: str, tail: bytes) -> None:
    packet = build_magic_packet(MAC, secureon)
    assert len(packet) == 102 + len(tail)
    assert len(packet) in (106, 108)
    assert packet[:102] == build_magic_packet(MAC)
    assert packet[102:] == tail


def test_bad_secureon_is_an_input_error() -> None:
    with pytest.raises(InputError):
        build_magic_packet(MAC, "aa:bb:cc")


def test_ethernet_frame_layout() -> None:
    frame = build_ethernet_frame(MAC, "02:aa:bb:cc:dd:ee")
    assert len(frame) == 14 + 102
    assert frame[0:6] == b"\xff" * 6
    assert frame[6:12] == bytes.fromhex("02aabbccddee")
    assert frame[12:14] == b"\x08\x42"
    assert int.from_bytes(frame[12:14], "big") == ETH_P_WOL
    assert frame[14:] == build_magic_packet(MAC)


def test_ethernet_frame_unicast_destination_secureon_and_zero_source() -> None:
    # "lo" reports 00:00:00:00:00:00 as its address: a frame may carry it even though no NIC has it.
    frame = build_ethernet_frame(MAC, "00:00:00:00:00:00", secureon="1.2.3.4", dst_mac="0211.2233.4455")
    assert frame[0:6] == MAC_BYTES
    assert frame[6:12] == b"\x00" * 6
    assert frame[14:] == build_magic_packet(MAC, "1.2.3.4")
    assert len(frame) == 14 + 106


@pytest.mark.parametrize("bad", ["1.2.3.4", "aa:bb:cc:dd", "zz"])
def test_ethernet_frame_rejects_non_mac_addresses(bad: str) -> None:
    with pytest.raises(InputError, match="dst_mac"):
        build_ethernet_frame(MAC, "02:aa:bb:cc:dd:ee", dst_mac=bad)


@pytest.mark.parametrize(
    ("ip", "prefix", "expected"),
    [
        ("10.0.0.5", 24, "10.0.0.255"),
        ("192.168.1.130", 25, "192.168.1.255"),
        ("192.168.1.5", 25, "192.168.1.127"),
        ("172.16.5.4", 16, "172.16.255.255"),
        ("10.1.2.3", 8, "10.255.255.255"),
        ("10.0.0.1", 30, "10.0.0.3"),
        ("10.0.0.0", 31, "255.255.255.255"),
        ("10.0.0.1", 32, "255.255.255.255"),
        ("10.0.0.1", 0, "255.255.255.255"),
    ],
)
def test_subnet_broadcast(ip: str, prefix: int, expected: str) -> None:
    assert subnet_broadcast(ip, prefix) == expected


@pytest.mark.parametrize(
    ("ip", "prefix"), [("10.0.0.1", 33), ("10.0.0.1", -1), ("nonsense", 24), ("::1", 64)]
)
def test_subnet_broadcast_rejects_bad_input(ip: str, prefix: int) -> None:
    with pytest.raises(InputError):
        subnet_broadcast(ip, prefix)


# --- WakeTarget -----------------------------------------------------------------------------------


def test_wake_target_normalises_and_precomputes_the_packet() -> None:
    target = WakeTarget("02-11-22-33-44-55", "udp", " 10.0.0.255 ", 7, "eth0", "AA:BB:CC:DD")
    assert target.mac == MAC
    assert target.address == "10.0.0.255"
    assert target.secureon == "aa:bb:cc:dd"
    assert target.packet == build_magic_packet(MAC, "aa:bb:cc:dd")
    assert target == WakeTarget(MAC, "udp", "10.0.0.255", 7, "eth0", "aa:bb:cc:dd")
    assert len({target, WakeTarget(MAC, "udp", "10.0.0.255", 7, "eth0", "aa:bb:cc:dd")}) == 1
    assert target.frame("02:aa:bb:cc:dd:ee") == build_ethernet_frame(MAC, "02:aa:bb:cc:dd:ee", "aa:bb:cc:dd")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mac": "nope", "transport": "udp"}, "wol_mac_address"),
        ({"mac": MAC, "transport": "carrier-pigeon"}, "wol_transport"),
        ({"mac": MAC, "transport": "udp", "address": "wol.example"}, "wol_broadcast_address"),
        ({"mac": MAC, "transport": "udp", "port": 0}, "wol_port"),
        ({"mac": MAC, "transport": "udp", "interface": "a b"}, "wol_interface"),
        ({"mac": MAC, "transport": "ethernet"}, "wol_interface"),
        ({"mac": MAC, "transport": "udp", "secureon": "xx"}, "wol_secureon"),
    ],
)
def test_wake_target_rejects_bad_settings(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        WakeTarget(**kwargs)
    assert info.value.field == field


def test_send_result_raise_for_error() -> None:
    target = WakeTarget(MAC, "udp")
    SendResult(target, ok=True).raise_for_error()
    with pytest.raises(RetryablePowerError, match="no route"):
        SendResult(target, ok=False, error="no route", retryable=True).raise_for_error()
    with pytest.raises(FatalPowerError, match=MAC):
        SendResult(target, ok=False, error="refused", retryable=False).raise_for_error()


# --- sending over UDP -----------------------------------------------------------------------------


@pytest.fixture
def udp_receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def test_udp_round_trip_on_loopback(udp_receiver: socket.socket) -> None:
    port = udp_receiver.getsockname()[1]
    targets = [
        WakeTarget(MAC, "udp", "127.0.0.1", port),
        WakeTarget("02:00:00:00:00:02", "udp", "127.0.0.1", port, secureon="01:02:03:04:05:06"),
    ]
    with MagicPacketSender() as sender:
        results = sender.send(targets)
    assert [r.ok for r in results] == [True, True]
    assert [r.target for r in results] == targets
    assert udp_receiver.recv(2048) == build_magic_packet(MAC)
    assert udp_receiver.recv(2048) == build_magic_packet("02:00:00:00:00:02", "01:02:03:04:05:06")


def test_udp_burst_of_3000_packets_is_counted_exactly(udp_receiver: socket.socket) -> None:
    try:
        # Default receive buffers drop 10-30 % of a burst; the forced size needs CAP_NET_ADMIN.
        udp_receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        can_count = True
    except PermissionError:
        can_count = False
    port = udp_receiver.getsockname()[1]
    targets = [
        WakeTarget(f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}", "udp", "127.0.0.1", port) for i in range(3000)
    ]
    with MagicPacketSender() as sender:
        results = sender.send(targets)
    assert all(r.ok for r in results), {r.error for r in results if not r.ok}
    if not can_count:
        return
    received: set[bytes] = set()
    udp_receiver.settimeout(1.0)
    while len(received) < len(targets):
        try:
            received.add(udp_receiver.recv(2048))
        except TimeoutError:
            break
    assert received == {t.packet for t in targets}


def test_send_magic_packet_convenience(udp_receiver: socket.socket) -> None:
    send_magic_packet("0211.2233.4455", address="127.0.0.1", port=udp_receiver.getsockname()[1])
    assert udp_receiver.recv(2048) == build_magic_packet(MAC)


def test_send_magic_packet_raises_fatal_for_a_missing_interface() -> None:
    with pytest.raises(FatalPowerError, match="nosuchif0"):
        send_magic_packet(MAC, address="127.0.0.1", interface="nosuchif0")


def test_one_failing_target_does_not_stop_the_others(udp_receiver: socket.socket) -> None:
    port = udp_receiver.getsockname()[1]
    good = [WakeTarget(f"02:00:00:00:00:0{i}", "udp", "127.0.0.1", port) for i in range(1, 4)]
    missing = WakeTarget("02:00:00:00:00:09", "udp", "127.0.0.1", port, interface="nosuchif0")
    missing_raw = WakeTarget("02:00:00:00:00:0a", "ethernet", interface="nosuchif1")
    targets = [good[0], missing, good[1], missing_raw, missing, good[2]]
    with MagicPacketSender() as sender:
        results = sender.send(targets)
    assert [r.target for r in results] == targets
    assert [r.ok for r in results] == [True, False, True, False, False, True]
    assert "nosuchif0" in (results[1].error or "")
    assert results[1].error == results[4].error
    assert not results[1].retryable
    assert "nosuchif1" in (results[3].error or "")
    assert {udp_receiver.recv(2048) for _ in good} == {t.packet for t in good}


def _in_new_network_namespace(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a thread moved into a fresh, empty network namespace (lo down, no routes)."""
    outcome: dict[str, Any] = {}

    def thread_main() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        # NOTE: unshare(CLONE_NEWNET) moves only the calling thread; the test process stays put.
        if libc.unshare(0x40000000) != 0:
            outcome["skip"] = os.strerror(ctypes.get_errno())
            return
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=thread_main)
    thread.start()
    thread.join()
    if "skip" in outcome:
        pytest.skip(f"cannot create a network namespace: {outcome['skip']}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@needs_root
def test_network_unreachable_is_reported_per_target() -> None:
    # In an empty namespace nothing is routable, so no packet can leave the machine.
    def work() -> list[SendResult]:
        with MagicPacketSender() as sender:
            return sender.send([WakeTarget(MAC, "udp"), WakeTarget(MAC, "udp", "10.0.0.255", 7)])

    results = _in_new_network_namespace(work)
    assert [r.ok for r in results] == [False, False]
    for result in results:
        assert result.error is not None
        assert result.error.startswith("network unreachable:")
        assert "set a source interface or a directed broadcast" in result.error
        assert result.retryable
    assert "255.255.255.255" in (results[0].error or "")


@needs_root
def test_send_magic_packet_raises_retryable_when_unreachable() -> None:
    def work() -> None:
        send_magic_packet(MAC)

    with pytest.raises(RetryablePowerError, match="network unreachable"):
        _in_new_network_namespace(work)


class _BusySocket:
    """Stands in for a UDP socket whose buffer is full for the first ``failures`` sends."""

    def __init__(self, real: socket.socket, failures: float, code: int) -> None:
        self.real = real
        self.failures = failures
        self.code = code
        self.sent: list[bytes] = []

    def fileno(self) -> int:
        return self.real.fileno()

    def sendto(self, data: bytes, flags: int, address: tuple[str, int]) -> int:
        assert flags & socket.MSG_DONTWAIT
        if self.failures > 0:
            self.failures -= 1
            raise OSError(self.code, os.strerror(self.code))
        self.sent.append(data)
        return len(data)

    def close(self) -> None:
        self.real.close()


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOBUFS])
def test_full_send_buffer_is_retried_briefly(code: int) -> None:
    # A loopback receiver drains at once, so a full buffer is simulated behind the socket cache.
    with MagicPacketSender() as sender:
        busy = _BusySocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 3, code)
        sender._sockets[("udp", None)] = (busy, b"")  # type: ignore[assignment]
        results = sender.send([WakeTarget(MAC, "udp", "127.0.0.1", 9)])
    assert results[0].ok
    assert busy.sent == [build_magic_packet(MAC)]


def test_send_buffer_that_stays_full_fails_within_the_budget() -> None:
    with MagicPacketSender(retry_budget=0.05) as sender:
        busy = _BusySocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), float("inf"), errno.EAGAIN)
        sender._sockets[("udp", None)] = (busy, b"")  # type: ignore[assignment]
        results = sender.send([WakeTarget(MAC, "udp", "127.0.0.1", 9)] * 3)
    assert [r.ok for r in results] == [False, False, False]
    assert all(r.retryable and "send buffer" in (r.error or "") for r in results)


# --- raw Ethernet ---------------------------------------------------------------------------------


@pytest.fixture
def lo_sniffer() -> Iterator[socket.socket]:
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError:
        pytest.skip("AF_PACKET needs CAP_NET_RAW")
    sock.bind(("lo", ETH_P_ALL))
    sock.settimeout(2.0)
    yield sock
    sock.close()


@needs_root
def test_raw_ethernet_frame_arrives_on_lo(lo_sniffer: socket.socket) -> None:
    target = WakeTarget("02:42:42:42:42:01", "ethernet", interface="lo", secureon="1.2.3.4")
    with MagicPacketSender() as sender:
        assert sender.source_mac("lo") == "00:00:00:00:00:00"
        results = sender.send([target])
    assert results[0].ok, results[0].error
    while True:  # other loopback traffic may be interleaved; a timeout here fails the test
        frame, (ifname, protocol, pkttype, _hatype, _addr) = lo_sniffer.recvfrom(4096)
        if frame[12:14] == b"\x08\x42" and frame[14:] == target.packet and pkttype != PACKET_OUTGOING:
            break
    assert ifname == "lo"
    assert protocol == ETH_P_WOL  # the kernel took the protocol from our EtherType
    assert frame == build_ethernet_frame(target.mac, "00:00:00:00:00:00", "1.2.3.4")
    assert len(frame) == 14 + 106


@needs_root
def test_raw_ethernet_missing_interface_is_fatal_and_named() -> None:
    with MagicPacketSender() as sender, pytest.raises(FatalPowerError, match="'nosuchif0'"):
        sender.open("ethernet", "nosuchif0")


def _drop_cap_net_raw() -> None:
    """Clear CAP_NET_RAW from the calling thread's effective capabilities (capabilities are per thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable} words
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0] &= ~(1 << 13)  # CAP_NET_RAW is bit 13 of the low effective word
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


@needs_root
def test_raw_ethernet_without_cap_net_raw_is_fatal() -> None:
    outcome: dict[str, BaseException] = {}

    def thread_main() -> None:
        _drop_cap_net_raw()
        with MagicPacketSender() as sender:
            try:
                sender.open("ethernet", "lo")
            except BaseException as exc:
                outcome["error"] = exc

    thread = threading.Thread(target=thread_main)
    thread.start()
    thread.join()
    error = outcome.get("error")
    assert isinstance(error, FatalPowerError)
    assert "CAP_NET_RAW" in str(error)


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (PermissionError(errno.EPERM, "Operation not permitted"), FatalPowerError, "CAP_NET_RAW"),
        (PermissionError(errno.EACCES, "Permission denied"), FatalPowerError, "CAP_NET_RAW"),
        (OSError(errno.ENODEV, "No such device"), FatalPowerError, "'eth9'"),
        (OSError(errno.EAFNOSUPPORT, "Address family not supported"), FatalPowerError, "cannot open"),
        (OSError(errno.EMFILE, "Too many open files"), RetryablePowerError, "Too many open files"),
    ],
)
def test_socket_open_error_mapping(exc: OSError, kind: type[Exception], text: str) -> None:
    error = socket_open_error(exc, "ethernet", "eth9")
    assert type(error) is kind
    assert text in str(error)


def test_udp_bind_to_device_permission_error_mentions_the_interface() -> None:
    error = socket_open_error(PermissionError(errno.EPERM, "x"), "udp", "eth9")
    assert isinstance(error, FatalPowerError)
    assert "eth9" in str(error)
    assert "SO_BINDTODEVICE" in str(error)
