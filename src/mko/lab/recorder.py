"""What a lab node's network card sees, and a power simulation that boots the node on a magic packet.

:class:`MagicPacketRecorder` taps the node's interface with an AF_PACKET socket, the way a NIC in
Wake-on-LAN mode inspects every frame, and records each magic packet it receives: in an IPv4/IPv6 UDP
datagram (any port) or in a raw EtherType 0x0842 frame. Like a NIC that is not promiscuous it ignores
frames addressed to another MAC (which a bridge floods while it has not learned a port) and frames the
node itself sent.

:class:`BootOnWake` turns a namespace into a machine that is "off" (nothing listens on its TCP port)
until a magic packet for its MAC arrives, then "boots" after a delay and answers like an SSH daemon.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from mko.lab.macaddr import format_mac, normalize_mac
from mko.lab.netns import INTERFACE, enter_netns
from mko.platform.errors import LabError

__all__ = [
    "BANNER",
    "BootOnWake",
    "BootService",
    "CapturedPacket",
    "MagicPacketRecorder",
    "PacketKind",
    "PowerState",
    "find_magic",
    "parse_frame",
]

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_WOL = 0x0842
_VLAN_ETHERTYPES = (0x8100, 0x88A8)
_CANDIDATE_ETHERTYPES = frozenset({ETH_P_IP, ETH_P_IPV6, ETH_P_WOL, *_VLAN_ETHERTYPES})
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
# sll_pkttype values: what a non-promiscuous NIC accepts is host, broadcast and multicast.
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)
_NIC_PKTTYPES = frozenset({PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST})
# With default buffers 10-30 % of a 10,000-packet burst is dropped; 32 MB loses none.
DEFAULT_RCVBUF = 32 * 1024 * 1024
_SYNC = b"\xff" * 6
_MAGIC_LEN = 6 + 16 * 6
# Read at most this many frames before publishing them, so waiters see progress during a flood.
_BATCH = 64

BANNER = b"SSH-2.0-mkolab\r\n"


class BootService(Protocol):
    """What a booted node runs instead of the banner listener (e.g. a real sshd)."""

    def start(self) -> None:
        """Start; return once the node answers on its port (called in the node's namespace)."""

    def stop(self) -> None:
        """Stop everything the node runs; return once its port refuses connections."""


PacketKind = Literal["udp", "ethernet"]
PowerState = Literal["off", "booting", "on"]


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    """One magic packet as received by a node's network card."""

    time: float  # time.monotonic() when the frame was read
    kind: PacketKind
    frame_dst_mac: str
    frame_src_mac: str
    target_mac: str
    secureon: str | None  # colon hex, 4 or 6 bytes
    ip_src: str | None
    ip_dst: str | None
    udp_port: int | None


def find_magic(payload: bytes) -> tuple[bytes, bytes | None] | None:
    """Return (target MAC, SecureOn password or None) of a magic packet anywhere in PAYLOAD, else None."""
    # Real NICs scan the whole frame for the sync stream, so the magic packet need not start at offset 0.
    start = payload.find(_SYNC)
    while start != -1 and start + _MAGIC_LEN <= len(payload):
        mac = payload[start + 6 : start + 12]
        if payload[start + 6 : start + _MAGIC_LEN] == mac * 16:
            rest = payload[start + _MAGIC_LEN :]
            return mac, (rest if len(rest) in (4, 6) else None)
        start = payload.find(_SYNC, start + 1)
    return None


def _udp_payload(frame: bytes, offset: int, ethertype: int) -> tuple[str, str, int, bytes] | None:
    if ethertype == ETH_P_IP:
        ip = frame[offset:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            return None
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4])
        frag = int.from_bytes(ip[6:8]) & 0x3FFF
        if ihl < 20 or ip[9] != socket.IPPROTO_UDP or frag:
            return None
        ip = ip[:total] if ihl <= total <= len(ip) else ip
        src, dst, udp = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), ip[ihl:]
    elif ethertype == ETH_P_IPV6:
        ip = frame[offset:]
        # Only a UDP header right after the fixed header; extension headers are not used for WoL.
        if len(ip) < 40 or ip[0] >> 4 != 6 or ip[6] != socket.IPPROTO_UDP:
            return None
        src = str(ipaddress.IPv6Address(ip[8:24]))
        dst = str(ipaddress.IPv6Address(ip[24:40]))
        udp = ip[40 : 40 + int.from_bytes(ip[4:6])]
    else:
        return None
    if len(udp) < 8:
        return None
    length = int.from_bytes(udp[4:6])
    payload = udp[8:length] if 8 <= length <= len(udp) else udp[8:]
    return src, dst, int.from_bytes(udp[2:4]), payload


def parse_frame(frame: bytes, received_at: float) -> CapturedPacket | None:
    """Return the magic packet carried by an Ethernet frame (UDP or EtherType 0x0842), else None."""
    if len(frame) < 14:
        return None
    offset = 12
    ethertype = int.from_bytes(frame[12:14])
    while ethertype in _VLAN_ETHERTYPES and len(frame) >= offset + 8:
        offset += 4
        ethertype = int.from_bytes(frame[offset : offset + 2])
    offset += 2
    ip_src = ip_dst = None
    port = None
    kind: PacketKind
    if ethertype == ETH_P_WOL:
        kind, payload = "ethernet", frame[offset:]
    else:
        udp = _udp_payload(frame, offset, ethertype)
        if udp is None:
            return None
        kind = "udp"
        ip_src, ip_dst, port, payload = udp
    magic = find_magic(payload)
    if magic is None:
        return None
    target, password = magic
    return CapturedPacket(
        time=received_at,
        kind=kind,
        frame_dst_mac=format_mac(frame[0:6]),
        frame_src_mac=format_mac(frame[6:12]),
        target_mac=format_mac(target),
        secureon=format_mac(password) if password is not None else None,
        ip_src=ip_src,
        ip_dst=ip_dst,
        udp_port=port,
    )


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while sock.recv(65536):
            pass


class MagicPacketRecorder:
    """Records the magic packets a node's interface receives; start()/stop() or use as a context manager."""

    def __init__(
        self,
        netns: str,
        interface: str,
        own_mac: str,
        *,
        udp_ports: Sequence[int] = (9, 7),
        rcvbuf: int = DEFAULT_RCVBUF,
        promiscuous: bool = False,
    ) -> None:
        self.netns = netns
        self.interface = interface
        self.own_mac = normalize_mac(own_mac)
        self.udp_ports = tuple(udp_ports)
        self.rcvbuf = rcvbuf
        self.promiscuous = promiscuous
        self.listener_errors: list[Exception] = []
        self._cond = threading.Condition()
        self._packets: list[CapturedPacket] = []
        self._per_mac: Counter[str] = Counter()
        self._listeners: tuple[Callable[[CapturedPacket], None], ...] = ()
        self._frames = 0
        self._drops = 0
        self._raw: socket.socket | None = None
        self._udp: list[socket.socket] = []
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Open the sockets inside the node's namespace and start the reader thread."""
        if self._thread is not None:
            raise RuntimeError("recorder already started")
        opened: list[socket.socket] = []
        try:
            with enter_netns(self.netns):
                raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                opened.append(raw)
                raw.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
                # Kernel-side filter (Linux >= 4.20) saves buffer space; pkttype is still checked below.
                with contextlib.suppress(OSError):
                    raw.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                raw.bind((self.interface, ETH_P_ALL))
                raw.setblocking(False)
                # Listeners on the WoL ports keep the node from answering ICMP port-unreachable.
                for port in self.udp_ports:
                    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    opened.append(udp)
                    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    udp.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    udp.bind(("0.0.0.0", port))  # noqa: S104 - only a socket bound to any address sees broadcasts
                    udp.setblocking(False)
            wake = socket.socketpair()
            opened.extend(wake)
            for end in wake:
                end.setblocking(False)
        except BaseException:
            for sock in opened:
                sock.close()
            raise
        self._raw, self._udp, self._wake = raw, opened[1 : 1 + len(self.udp_ports)], wake
        self._thread = threading.Thread(
            target=self._run, name=f"mko-lab-rec-{self.netns}-{self.interface}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the reader thread and close every socket; recorded packets stay readable."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        assert self._wake is not None
        assert self._raw is not None
        with contextlib.suppress(BlockingIOError):
            self._wake[1].send(b"x")
        thread.join()
        self._collect_stats()
        for sock in (self._raw, *self._udp, *self._wake):
            sock.close()
        self._raw, self._udp, self._wake = None, [], None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Return whether the reader thread is running."""
        return self._thread is not None

    # ----------------------------------------------------------------- results

    @property
    def packets(self) -> list[CapturedPacket]:
        """Return a copy of the magic packets received so far, oldest first."""
        with self._cond:
            return list(self._packets)

    def packets_for(self, mac: str) -> list[CapturedPacket]:
        """Return the received magic packets whose target is MAC."""
        target = normalize_mac(mac)
        with self._cond:
            return [p for p in self._packets if p.target_mac == target]

    def wait_for(self, count: int, timeout: float, mac: str | None = None) -> bool:
        """Block until COUNT magic packets (for MAC, if given) were received; False on timeout."""
        target = normalize_mac(mac) if mac is not None else None

        def enough() -> bool:
            return (self._per_mac[target] if target is not None else len(self._packets)) >= count

        with self._cond:
            return self._cond.wait_for(enough, timeout)

    def clear(self) -> None:
        """Forget the packets recorded so far."""
        with self._cond:
            self._packets.clear()
            self._per_mac.clear()

    @property
    def frames_seen(self) -> int:
        """Return how many frames the card accepted (any kind), for debugging."""
        with self._cond:
            return self._frames

    @property
    def dropped(self) -> int:
        """Return how many frames the kernel dropped because the receive buffer was full."""
        self._collect_stats()
        with self._cond:
            return self._drops

    def _collect_stats(self) -> None:
        raw = self._raw
        if raw is None:
            return
        # PACKET_STATISTICS resets the kernel counters on every read, so they are accumulated here.
        with contextlib.suppress(OSError):
            _, drops = struct.unpack("II", raw.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            with self._cond:
                self._drops += drops

    # ----------------------------------------------------------------- listeners

    def add_listener(self, callback: Callable[[CapturedPacket], None]) -> None:
        """Call CALLBACK (in the reader thread) for each packet, before wait_for() can see it."""
        with self._cond:
            self._listeners = (*self._listeners, callback)

    def remove_listener(self, callback: Callable[[CapturedPacket], None]) -> None:
        """Stop calling CALLBACK."""
        with self._cond:
            self._listeners = tuple(cb for cb in self._listeners if cb != callback)

    # ----------------------------------------------------------------- reader thread

    def _run(self) -> None:
        assert self._raw is not None
        assert self._wake is not None
        raw, wake = self._raw, self._wake[0]
        poller = select.poll()
        for sock in (raw, wake, *self._udp):
            poller.register(sock, select.POLLIN)
        buf = bytearray(65536)
        view = memoryview(buf)
        try:
            while True:
                for fd, _ in poller.poll():
                    if fd == wake.fileno():
                        return
                    if fd == raw.fileno():
                        self._read_frames(raw, buf, view)
                    else:
                        for udp in self._udp:
                            if udp.fileno() == fd:
                                _drain(udp)
        finally:
            view.release()

    def _read_frames(self, raw: socket.socket, buf: bytearray, view: memoryview) -> None:
        accepted = 0
        batch: list[CapturedPacket] = []
        for _ in range(_BATCH):
            try:
                size, addr = raw.recvfrom_into(view)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ENETDOWN etc. are reported once through the socket error and cleared; keep listening.
                if exc.errno != errno.ENETDOWN:
                    log.warning("recorder %s/%s: %s", self.netns, self.interface, exc)
                break
            now = time.monotonic()
            # addr = (ifname, proto, pkttype, hatype, hwaddr); frames of other interfaces can arrive
            # between socket() and bind().
            if addr[0] != self.interface or addr[2] == PACKET_OUTGOING:
                continue
            if not (self.promiscuous or addr[2] in _NIC_PKTTYPES):
                continue
            accepted += 1
            # Copy and parse only frames that can carry a magic packet (SSH and ARP traffic is common).
            if size < 14 or (buf[12] << 8 | buf[13]) not in _CANDIDATE_ETHERTYPES:
                continue
            packet = parse_frame(bytes(view[:size]), now)
            if packet is not None:
                batch.append(packet)
        if accepted:
            self._publish(accepted, batch)

    def _publish(self, accepted: int, batch: list[CapturedPacket]) -> None:
        for packet in batch:
            # Listeners run before the packet is published, so when wait_for() returns, a BootOnWake
            # driven by this recorder has already reacted to the packet.
            for callback in self._listeners:
                try:
                    callback(packet)
                except Exception as exc:
                    log.exception("recorder %s: listener %r failed", self.netns, callback)
                    self.listener_errors.append(exc)
        with self._cond:
            self._frames += accepted
            if batch:
                self._packets.extend(batch)
                self._per_mac.update(p.target_mac for p in batch)
                self._cond.notify_all()


class BootOnWake:
    """A node that is off (TCP PORT closed) until a magic packet for its MAC arrives, then boots."""

    def __init__(
        self,
        netns: str,
        ip: str,
        port: int,
        mac: str,
        *,
        boot_delay: float = 0.3,
        wakeable: bool = True,
        secureon: str | None = None,
        interface: str = INTERFACE,
        recorder: MagicPacketRecorder | None = None,
        banner: bytes = BANNER,
        linger: float = 2.0,
        service: BootService | None = None,
        armed: Callable[[], bool] | None = None,
    ) -> None:
        self.netns = netns
        self.ip = ip
        self.port = port
        self.mac = normalize_mac(mac)
        self.boot_delay = boot_delay
        self.wakeable = wakeable
        # A card with a SecureOn password only wakes when the packet carries the same password.
        self.secureon = secureon.lower() if secureon is not None else None
        self.banner = banner
        self.linger = linger
        # A real service (e.g. the node's sshd) replaces the banner listener; `armed` says whether the
        # NIC would act on a magic packet now (its Wake-on state), when the node simulates one.
        self.service = service
        self.armed = armed
        self._owns_recorder = recorder is None
        # Without a shared recorder, a private one that does not claim the UDP ports.
        self.recorder = recorder or MagicPacketRecorder(netns, interface, self.mac, udp_ports=())
        self._cond = threading.Condition()
        self._state: PowerState = "off"
        self._boot_at = 0.0
        self._off_requested = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        # Read freely; written under the lock by the packet listener and the worker thread.
        self.booted_at: float | None = None
        self.wake_requested_at: float | None = None
        self.wake_packets = 0  # magic packets for this MAC seen while off or booting (reset by power_off)
        self.boot_count = 0
        self.error: Exception | None = None
        # Whether the machine has power at all (the UPS output feeding it); without it nothing boots it.
        self.supplied = True

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Start the power simulation (the node begins switched off)."""
        if self._thread is not None:
            raise RuntimeError("BootOnWake already started")
        self._wake = socket.socketpair()
        for end in self._wake:
            end.setblocking(False)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"mko-lab-boot-{self.netns}", daemon=True)
        self._thread.start()
        self.recorder.add_listener(self._on_packet)
        if self._owns_recorder:
            try:
                self.recorder.start()
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        """Stop listening and end the worker thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.recorder.remove_listener(self._on_packet)
        if self._owns_recorder:
            self.recorder.stop()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._poke()
        thread.join()
        assert self._wake is not None
        for end in self._wake:
            end.close()
        self._wake = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- power

    @property
    def state(self) -> PowerState:
        """Return "off", "booting" or "on"."""
        with self._cond:
            return self._state

    @property
    def is_on(self) -> bool:
        """Return whether the node is up (its TCP port accepts connections)."""
        return self.state == "on"

    def cut_supply(self) -> None:
        """The power feeding the machine goes away: it is off at once, and nothing can boot it."""
        with self._cond:
            self.supplied = False
        self.power_off()

    def restore_supply(self) -> None:
        """Power returns: the machine stays off (it boots on a magic packet or its power button)."""
        with self._cond:
            self.supplied = True

    def power_on(self) -> None:
        """Boot now, as if the power button was pressed (no magic packet, no delay)."""
        with self._cond:
            if self._state == "off" and self.supplied:
                self._state = "booting"
                self._boot_at = time.monotonic()
                self._cond.notify_all()

    def power_off(self, timeout: float = 5.0) -> None:
        """Switch the node off: when this returns, its TCP port refuses connections."""
        with self._cond:
            if self._state == "booting":
                self._state = "off"
            elif self._state == "on":
                self._off_requested = True
                self._poke()
                if not self._cond.wait_for(lambda: self._state == "off", timeout):
                    raise LabError(f"{self.netns}: power_off did not complete within {timeout} s")
            self.wake_packets = 0
            self.wake_requested_at = None

    def wait_booted(self, timeout: float) -> bool:
        """Block until the node is on; False on timeout; LabError if the simulation failed."""
        with self._cond:
            self._cond.wait_for(lambda: self._state == "on" or self.error is not None, timeout)
            if self.error is not None:
                raise LabError(f"{self.netns}: boot simulation failed: {self.error}") from self.error
            return self._state == "on"

    def _poke(self) -> None:
        if self._wake is not None:
            with contextlib.suppress(BlockingIOError):
                self._wake[1].send(b"x")

    def _on_packet(self, packet: CapturedPacket) -> None:
        if packet.target_mac != self.mac or (self.secureon is not None and packet.secureon != self.secureon):
            return
        with self._cond:
            if self._state == "on":
                return
            self.wake_packets += 1
            powered = self.supplied and self.error is None
            if self._state == "off" and self.wakeable and powered and self._is_armed():
                self._state = "booting"
                self.wake_requested_at = packet.time
                self._boot_at = packet.time + self.boot_delay
                self._cond.notify_all()

    def _is_armed(self) -> bool:
        if self.armed is None:
            return True
        try:
            return self.armed()
        except Exception:
            log.exception("%s: reading the NIC's Wake-on state failed", self.netns)
            return False

    # ----------------------------------------------------------------- worker thread

    def _run(self) -> None:
        try:
            # The worker lives in the node's namespace, so its listening socket belongs to the node.
            with enter_netns(self.netns):
                while self._wait_for_boot():
                    if self.service is not None:
                        self._run_service(self.service)
                        continue
                    # The node answers from the moment it listens: the boot instant is taken before, so a
                    # busy machine that delays this thread cannot show a probe answered before the boot.
                    opened = time.monotonic()
                    listener = self._listen()
                    with self._cond:
                        if self._state != "booting":  # switched off again during the boot delay
                            listener.close()
                            continue
                        self._state = "on"
                        self.booted_at = opened
                        self.boot_count += 1
                        self._cond.notify_all()
                    self._serve(listener)
                    with self._cond:
                        self._state = "off"
                        self._off_requested = False
                        self.booted_at = None
                        self._cond.notify_all()
        except Exception as exc:
            log.exception("%s: boot simulation failed", self.netns)
            with self._cond:
                self.error = exc
                self._state = "off"
                self._cond.notify_all()

    def _run_service(self, service: BootService) -> None:
        started = time.monotonic()  # it may answer at any moment of start(): the boot is when that began
        service.start()
        with self._cond:
            booted = self._state == "booting"  # else it was switched off again during the boot
            if booted:
                self._state = "on"
                self.booted_at = started
                self.boot_count += 1
                self._cond.notify_all()
        if not booted:
            service.stop()
            return
        assert self._wake is not None
        wake = self._wake[0]
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        try:
            while True:
                poller.poll()
                _drain(wake)
                with self._cond:
                    if self._off_requested or self._stopping:
                        break
        finally:
            service.stop()
            with self._cond:
                self._state = "off"
                self._off_requested = False
                self.booted_at = None
                self._cond.notify_all()

    def _wait_for_boot(self) -> bool:
        with self._cond:
            while not self._stopping:
                if self._state == "booting":
                    remaining = self._boot_at - time.monotonic()
                    if remaining <= 0:
                        return True
                    self._cond.wait(remaining)
                else:
                    self._cond.wait()
            return False

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Re-booting must not trip over TIME_WAIT connections of the previous "uptime".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ip, self.port))
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _serve(self, listener: socket.socket) -> None:
        assert self._wake is not None
        wake = self._wake[0]
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(wake, select.POLLIN)
        # Connections get the banner, then a half-close; they are closed once the client closes (or after
        # `linger` s), so a client that sends its own banner first does not get a reset.
        conns: dict[int, tuple[socket.socket, float]] = {}

        def close(fd: int) -> None:
            sock, _ = conns.pop(fd)
            poller.unregister(fd)
            sock.close()

        try:
            while True:
                now = time.monotonic()
                for fd in [fd for fd, (_, deadline) in conns.items() if deadline <= now]:
                    close(fd)
                wait_ms = None if not conns else max(0.0, min(d for _, d in conns.values()) - now) * 1000
                for fd, _ in poller.poll(wait_ms):
                    if fd == wake.fileno():
                        _drain(wake)
                        with self._cond:
                            if self._off_requested or self._stopping:
                                return
                    elif fd == listener.fileno():
                        self._accept(listener, poller, conns)
                    elif fd in conns:
                        try:
                            data = conns[fd][0].recv(4096)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            data = b""
                        if not data:
                            close(fd)
        finally:
            for fd in list(conns):
                close(fd)
            listener.close()

    def _accept(
        self, listener: socket.socket, poller: select.poll, conns: dict[int, tuple[socket.socket, float]]
    ) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            try:
                conn.send(self.banner)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                conn.close()
                continue
            conns[conn.fileno()] = (conn, time.monotonic() + self.linger)
            poller.register(conn, select.POLLIN)
