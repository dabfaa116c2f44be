"""Wake-on-LAN magic packets: building them and sending many of them quickly.

A magic packet is 6 bytes of 0xFF followed by the target MAC address 16 times, optionally followed by a
4- or 6-byte SecureOn password. It travels either inside a UDP datagram (usually to a broadcast address,
port 9 or 7) or directly as the payload of an Ethernet frame with EtherType 0x0842 (what ``etherwake``
sends); the second form needs CAP_NET_RAW but no IP configuration at all.

:class:`MagicPacketSender` keeps one socket per (transport, interface) so that waking a whole rack is a
plain loop of ``sendto`` calls and never stops at the first failing target.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self, get_args

from mko.platform.errors import FatalPowerError, InputError, PowerError, RetryablePowerError
from mko.platform.validation import normalize_mac, normalize_secureon, validate_interface, validate_port

__all__ = [
    "BROADCAST_MAC",
    "ETH_P_WOL",
    "LIMITED_BROADCAST",
    "MagicPacketSender",
    "SendResult",
    "Transport",
    "WakeTarget",
    "build_ethernet_frame",
    "build_magic_packet",
    "send_magic_packet",
    "socket_open_error",
    "subnet_broadcast",
]

Transport = Literal["udp", "ethernet"]

ETH_P_WOL = 0x0842
LIMITED_BROADCAST = "255.255.255.255"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"

_SYNC_STREAM = b"\xff" * 6
_ETHERTYPE_WOL = ETH_P_WOL.to_bytes(2, "big")
_BROADCAST_MAC_BYTES = b"\xff" * 6
_TRANSPORTS: tuple[str, ...] = get_args(Transport)
# A full send buffer (EAGAIN) or a full device queue (ENOBUFS) clears within milliseconds.
_BUSY_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
_MISSING_DEVICE_ERRNOS = frozenset({errno.ENODEV, errno.ENXIO})
_PERMISSION_ERRNOS = frozenset({errno.EPERM, errno.EACCES})
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Longest single wait for buffer space; the per-call budget bounds the sum.
_MAX_POLL_WAIT = 0.01


def _frame_mac_bytes(value: str, field_name: str) -> bytes:
    # normalize_mac refuses group and all-zero addresses (right for a NIC to wake), but a frame may go
    # to broadcast/multicast and "lo" reports 00:00:00:00:00:00 as its own address. normalize_secureon
    # accepts the same MAC spellings without those checks; its 4-byte forms are rejected here.
    try:
        digits = normalize_secureon(value, field_name).replace(":", "")
    except InputError:
        digits = ""
    if len(digits) != 12:
        raise InputError(field_name, f"{value!r} is not a MAC address (expected e.g. aa:bb:cc:dd:ee:ff)")
    return bytes.fromhex(digits)


def build_magic_packet(mac: str, secureon: str | None = None) -> bytes:
    """Return the magic packet for ``mac``: 6x0xFF, 16x the MAC, then the SecureOn password if any."""
    return _packet(normalize_mac(mac), None if secureon is None else normalize_secureon(secureon))


def _packet(mac: str, secureon: str | None) -> bytes:
    """The magic packet of a normalised MAC and SecureOn password (``aa:bb:…``)."""
    packet = _SYNC_STREAM + bytes.fromhex(mac.replace(":", "")) * 16
    if secureon is not None:
        packet += bytes.fromhex(secureon.replace(":", ""))
    return packet


def build_ethernet_frame(
    target_mac: str, src_mac: str, secureon: str | None = None, dst_mac: str = BROADCAST_MAC
) -> bytes:
    """Return an etherwake-style Ethernet frame (EtherType 0x0842) carrying the magic packet."""
    header = _frame_mac_bytes(dst_mac, "dst_mac") + _frame_mac_bytes(src_mac, "src_mac") + _ETHERTYPE_WOL
    return header + build_magic_packet(target_mac, secureon)


def subnet_broadcast(ip: str, prefix_len: int) -> str:
    """Return the directed broadcast of ``ip/prefix_len``; /31 and /32 have none, so 255.255.255.255."""
    if isinstance(prefix_len, bool) or not isinstance(prefix_len, int) or not 0 <= prefix_len <= 32:
        raise InputError("prefix_len", f"{prefix_len!r} is not an IPv4 prefix length (0-32)")
    try:
        network = ipaddress.IPv4Network(f"{ip.strip()}/{prefix_len}", strict=False)
    except ValueError:
        raise InputError("ip_address", f"{ip!r} is not an IPv4 address") from None
    # RFC 3021: a /31 is a point-to-point link whose two addresses are both hosts; a /32 is one host.
    if prefix_len >= 31:
        return LIMITED_BROADCAST
    return str(network.broadcast_address)


@dataclass(frozen=True, slots=True)
class WakeTarget:
    """One node to wake: its MAC and how the magic packet reaches it; inputs are normalised."""

    mac: str
    transport: Transport = "udp"
    address: str = LIMITED_BROADCAST
    port: int = 9
    interface: str | None = None
    secureon: str | None = None
    packet: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.transport not in _TRANSPORTS:
            raise InputError("wol_transport", f"{self.transport!r} is not one of {', '.join(_TRANSPORTS)}")
        try:
            # An IP literal only: a host name would make sendto resolve DNS on the event loop thread.
            address = str(ipaddress.IPv4Address(self.address.strip()))
        except ValueError:
            raise InputError("wol_broadcast_address", f"{self.address!r} is not an IPv4 address") from None
        interface = None if self.interface is None else validate_interface(self.interface)
        if self.transport == "ethernet" and interface is None:
            raise InputError("wol_interface", "the ethernet transport needs a network interface, e.g. eth0")
        secureon = None if self.secureon is None else normalize_secureon(self.secureon)
        mac = normalize_mac(self.mac)
        # Frozen dataclass: normalised values are stored through object.__setattr__.
        object.__setattr__(self, "mac", mac)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "port", validate_port(self.port, "wol_port"))
        object.__setattr__(self, "interface", interface)
        object.__setattr__(self, "secureon", secureon)
        object.__setattr__(self, "packet", _packet(mac, secureon))

    def frame(self, src_mac: str, dst_mac: str = BROADCAST_MAC) -> bytes:
        """Return the Ethernet frame for this target sent from ``src_mac``."""
        header = _frame_mac_bytes(dst_mac, "dst_mac") + _frame_mac_bytes(src_mac, "src_mac")
        return header + _ETHERTYPE_WOL + self.packet

    def describe(self) -> str:
        """Return a short human description of where the packet goes."""
        via = f" via {self.interface}" if self.interface else ""
        if self.transport == "ethernet":
            return f"{self.mac} (Ethernet broadcast{via})"
        return f"{self.mac} ({self.address}:{self.port}{via})"


@dataclass(frozen=True, slots=True)
class SendResult:
    """Outcome of sending one target's packet; ``retryable`` tells whether trying again may help."""

    target: WakeTarget
    ok: bool
    error: str | None = None
    retryable: bool = False

    def raise_for_error(self) -> None:
        """Raise RetryablePowerError or FatalPowerError if the send failed."""
        if self.ok:
            return
        message = f"magic packet for {self.target.describe()}: {self.error}"
        if self.retryable:
            raise RetryablePowerError(message)
        raise FatalPowerError(message)


def socket_open_error(exc: OSError, transport: Transport, interface: str | None) -> PowerError:
    """Translate an OSError from opening or binding a send socket into a PowerError."""
    if exc.errno in _PERMISSION_ERRNOS:
        if transport == "ethernet":
            return FatalPowerError(
                f"sending raw Ethernet frames on {interface} needs CAP_NET_RAW: run mko as root, grant the"
                " capability (e.g. AmbientCapabilities=CAP_NET_RAW in the systemd unit) or use the udp"
                " transport"
            )
        return FatalPowerError(
            f"binding the UDP socket to interface {interface} (SO_BINDTODEVICE) was refused: this kernel"
            " requires CAP_NET_RAW for it"
        )
    if exc.errno in _MISSING_DEVICE_ERRNOS:
        return FatalPowerError(f"network interface {interface!r} does not exist (in this network namespace)")
    if exc.errno in {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT}:
        return FatalPowerError(f"this system cannot open a {transport} socket: {exc.strerror}")
    if exc.errno in _RESOURCE_ERRNOS:
        return RetryablePowerError(f"cannot open a {transport} socket now: {exc.strerror}")
    return FatalPowerError(f"cannot open a {transport} socket on {interface or 'any interface'}: {exc}")


_UNREACHABLE_HINT = "set a source interface or a directed broadcast (e.g. 192.168.1.255)"
# errno -> (message template, retryable). Routes and links may come up later (an orchestrator that
# boots with its nodes after a power cut); permission and missing devices are settings to fix.
_SEND_ERRORS: dict[int, tuple[str, bool]] = {
    errno.ENETUNREACH: ("network unreachable: no route to {address}; " + _UNREACHABLE_HINT, True),
    errno.EHOSTUNREACH: ("no route to host {address}", True),
    errno.ENETDOWN: ("network is down (interface {interface} is not up)", True),
    errno.EAGAIN: ("send buffer still full after retrying for {budget:g} s; too many packets at once", True),
    errno.ENOBUFS: ("send buffer still full after retrying for {budget:g} s; too many packets at once", True),
    errno.EPERM: ("sending to {address} was refused (a firewall rule, or broadcast not allowed)", False),
    errno.EACCES: ("sending to {address} was refused (a firewall rule, or broadcast not allowed)", False),
    errno.ENODEV: ("network interface {interface} has disappeared", False),
    errno.ENXIO: ("network interface {interface} has disappeared", False),
    errno.EINVAL: ("invalid destination {address}:{port}", False),
    errno.EMSGSIZE: ("packet too large for interface {interface}", False),
}


def _send_error(exc: OSError, target: WakeTarget, budget: float) -> tuple[str, bool]:
    """Return (message, retryable) for an OSError raised while sending to ``target``."""
    known = _SEND_ERRORS.get(exc.errno or 0)
    if known is None:
        return f"send failed: {exc.strerror or exc}", True
    template, retryable = known
    interface = target.interface or "used by the route"
    return template.format(
        address=target.address, port=target.port, interface=interface, budget=budget
    ), retryable


class MagicPacketSender:
    """Sends magic packets through cached sockets; close it (or use ``with``) when done.

    Sockets belong to the network namespace of the thread that opens them. Not thread-safe: use one
    sender per thread (normally the event loop thread). ``send`` never blocks for more than about
    ``retry_budget`` seconds in total, even when the send buffer is full.
    """

    def __init__(self, *, retry_budget: float = 0.2) -> None:
        self._retry_budget = retry_budget
        # (transport, interface) -> (socket, bytes prepended to each magic packet). The prefix is empty
        # for UDP and destination MAC + source MAC + EtherType for raw Ethernet.
        self._sockets: dict[tuple[Transport, str | None], tuple[socket.socket, bytes]] = {}
        self._poller = select.poll()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every cached socket."""
        sockets, self._sockets = self._sockets, {}
        for sock, _prefix in sockets.values():
            sock.close()

    def open(self, transport: Transport, interface: str | None = None) -> socket.socket:
        """Return the cached socket for (transport, interface), opening it; raises PowerError."""
        return self._entry(transport, interface)[0]

    def source_mac(self, interface: str) -> str:
        """Return the hardware address the ethernet transport sends from on ``interface``."""
        return self._entry("ethernet", interface)[1][6:12].hex(":")

    def _entry(self, transport: Transport, interface: str | None) -> tuple[socket.socket, bytes]:
        key = (transport, interface)
        entry = self._sockets.get(key)
        if entry is None:
            try:
                entry = self._open_udp(interface) if transport == "udp" else self._open_ethernet(interface)
            except OSError as exc:
                raise socket_open_error(exc, transport, interface) from exc
            self._sockets[key] = entry
        return entry

    @staticmethod
    def _open_udp(interface: str | None) -> tuple[socket.socket, bytes]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if interface is not None:
                # NOTE: 255.255.255.255 fails with ENETUNREACH on a host without a default route unless
                # the socket is tied to a device; on a multi-homed host this also picks the right NIC.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        except BaseException:
            sock.close()
            raise
        return sock, b""

    @staticmethod
    def _open_ethernet(interface: str | None) -> tuple[socket.socket, bytes]:
        if interface is None:
            raise FatalPowerError("the ethernet transport needs a network interface")
        # Protocol 0 makes the socket send-only: bound to ETH_P_WOL it would also queue every 0x0842 frame
        # the host receives. The kernel takes the frame's protocol from the EtherType we write.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((interface, 0))
            # NOTE: getsockname() of a bound AF_PACKET socket yields the interface's hardware address as
            # seen from the socket's network namespace; /sys/class/net follows the mount namespace.
            _name, _proto, _pkttype, hatype, hw_address = sock.getsockname()
            if len(hw_address) != 6:
                raise FatalPowerError(
                    f"interface {interface} has no Ethernet address (hardware type {hatype});"
                    " use the udp transport"
                )
        except BaseException:
            sock.close()
            raise
        return sock, _BROADCAST_MAC_BYTES + hw_address + _ETHERTYPE_WOL

    def send(self, targets: Sequence[WakeTarget]) -> list[SendResult]:
        """Send one magic packet per target, in order; one target's failure never stops the others."""
        results: list[SendResult] = []
        failed_opens: dict[tuple[Transport, str | None], PowerError] = {}
        retry_deadline: float | None = None
        for target in targets:
            key = (target.transport, target.interface)
            entry = self._sockets.get(key)
            if entry is None:
                if key in failed_opens:
                    results.append(_open_failure(target, failed_opens[key]))
                    continue
                try:
                    entry = self._entry(*key)
                except PowerError as exc:
                    failed_opens[key] = exc
                    results.append(_open_failure(target, exc))
                    continue
            sock, prefix = entry
            try:
                _send_one(sock, prefix, target)
            except OSError as exc:
                error: OSError | None = exc
                if exc.errno in _BUSY_ERRNOS:
                    if retry_deadline is None:
                        retry_deadline = time.monotonic() + self._retry_budget
                    error = self._send_busy(sock, prefix, target, exc, retry_deadline)
                if error is not None:
                    message, retryable = _send_error(error, target, self._retry_budget)
                    results.append(SendResult(target, False, message, retryable))
                    continue
            results.append(SendResult(target, True))
        return results

    def _send_busy(
        self, sock: socket.socket, prefix: bytes, target: WakeTarget, error: OSError, deadline: float
    ) -> OSError | None:
        """Retry a send that hit a full buffer until it goes out or ``deadline``; return the last error."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return error
            if error.errno == errno.ENOBUFS:
                # The device queue is full while our socket buffer is not, so POLLOUT would report
                # ready at once: give the queue a moment to drain instead.
                time.sleep(min(remaining, 0.001))
            else:
                # EAGAIN: our socket buffer is full; POLLOUT reports when it has room again.
                self._poller.register(sock, select.POLLOUT)
                try:
                    self._poller.poll(min(remaining, _MAX_POLL_WAIT) * 1000)
                finally:
                    self._poller.unregister(sock)
            try:
                _send_one(sock, prefix, target)
            except OSError as exc:
                if exc.errno not in _BUSY_ERRNOS:
                    return exc
                error = exc
                continue
            return None


def _send_one(sock: socket.socket, prefix: bytes, target: WakeTarget) -> None:
    # MSG_DONTWAIT: the socket stays blocking, but a full buffer fails at once with EAGAIN instead of
    # stalling the event loop; the caller then waits within a bounded retry budget.
    if target.transport == "udp":
        sock.sendto(target.packet, socket.MSG_DONTWAIT, (target.address, target.port))
    else:
        sock.send(prefix + target.packet, socket.MSG_DONTWAIT)


def _open_failure(target: WakeTarget, exc: PowerError) -> SendResult:
    return SendResult(target, False, str(exc), isinstance(exc, RetryablePowerError))


def send_magic_packet(
    mac: str,
    *,
    address: str = LIMITED_BROADCAST,
    port: int = 9,
    interface: str | None = None,
    secureon: str | None = None,
    transport: Transport = "udp",
) -> None:
    """Send one magic packet now; raise InputError, FatalPowerError or RetryablePowerError on failure."""
    target = WakeTarget(
        mac, transport=transport, address=address, port=port, interface=interface, secureon=secureon
    )
    with MagicPacketSender() as sender:
        sender.send([target])[0].raise_for_error()
