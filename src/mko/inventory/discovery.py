"""Network discovery: which hosts of a subnet are alive, their MACs, names, open ports, and known nodes.

How a host is found (``mko discover 10.0.0.0/24 --ports 22,16443``):

1. every address gets a TCP connection attempt on every port, all at once with bounded concurrency. A
   port that accepts is *open*; a TCP reset ("connection refused") also proves the host is there;
2. optionally (``--icmp``) an ICMP echo sweep (a raw socket: root or CAP_NET_RAW);
3. the kernel's neighbour table (``ip -j neigh``) is read afterwards: the probes made the kernel ARP for
   every on-link address, so it holds the MAC of each host that answered, and a REACHABLE entry proves
   a host that silently drops the probed ports is alive too. Routed (off-link) hosts have no MAC here;
4. reverse DNS names the live hosts where a PTR record (or /etc/hosts) has one;
5. each host is matched to the inventory by IP address or MAC.

The orchestrator's own addresses are left out. A powered-off machine cannot be discovered (it answers
neither ARP nor TCP), so discover while the machines are on, then let Wake-on-LAN use the MACs found.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.inventory.clusters import get_cluster
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform import validation
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import OperationStatus
from mko.platform.db.session import in_thread_session
from mko.platform.errors import ConflictError, InputError
from mko.platform.settings import Settings
from mko.platform.validation import InputModel
from mko.power.probe import ProbeResult, probe_many

__all__ = [
    "DiscoverRequest",
    "DiscoveredHost",
    "DiscoveryResult",
    "add_discovered",
    "discover",
    "discover_and_add",
    "icmp_sweep",
    "local_networks",
    "neighbours",
    "parse_ports",
]

log = logging.getLogger("mko.discovery")

_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0
_NEIGH_ALIVE = {"REACHABLE", "PERMANENT", "NOARP"}
_HOSTNAME_SAFE = re.compile(r"[^a-z0-9-]+")


class DiscoverRequest(InputModel):
    """What to scan and what to do with the result."""

    cidr: str = Field(description="IPv4 network to scan, e.g. 192.168.1.0/24 (a single address is /32)")
    ports: list[int] | None = Field(default=None, description="TCP ports to probe; default from settings")
    icmp: bool = Field(default=False, description="also send ICMP echo requests (needs root/CAP_NET_RAW)")
    force: bool = Field(default=False, description="allow ranges larger than discovery_max_prefix")
    resolve: bool = Field(default=True, description="look up reverse DNS names")
    add: bool = Field(default=False, description="add the hosts not yet in the inventory as nodes")
    cluster_id: int | None = Field(default=None, description="cluster the added nodes join (needed with add)")


class DiscoveredHost(BaseModel):
    """One live host."""

    ip: str
    mac: str | None = None
    hostname: str | None = None
    open_ports: list[int] = []
    seen_by: list[str] = Field(default=[], description="tcp (open or reset), icmp, arp")
    node_id: int | None = Field(default=None, description="the inventory node it already is")
    node_hostname: str | None = None
    known_by: list[str] = Field(default=[], description="ip and/or mac")
    prefix_len: int | None = Field(default=None, description="prefix of the on-link subnet it is in")
    added_node_id: int | None = None


class DiscoveryResult(BaseModel):
    """What a scan found."""

    cidr: str
    ports: list[int]
    icmp: bool
    addresses: int
    seconds: float
    hosts: list[DiscoveredHost]
    skipped_local: list[str] = Field(default=[], description="the orchestrator's own addresses, left out")
    operation_id: int | None = Field(default=None, description="the operation that added nodes")

    @property
    def new_hosts(self) -> list[DiscoveredHost]:
        """Hosts that are not in the inventory yet."""
        return [h for h in self.hosts if h.node_id is None]


# ------------------------------------------------------------------ input


def parse_ports(value: str | Sequence[int] | None, default: Sequence[int]) -> list[int]:
    """Ports from ``22,16443`` or a list, each checked; ``default`` for None, none for ``""`` (ICMP only)."""
    if value is None:
        return list(default)
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        ports: list[Any] = []
        for part in parts:
            if not part.isdigit():
                raise InputError("ports", f"{part!r} is not a port number")
            ports.append(int(part))
    else:
        ports = list(value)
    checked = [validation.validate_port(p, "ports") for p in ports]
    return list(dict.fromkeys(checked))


def _network(cidr: str, settings: Settings, force: bool) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise InputError("cidr", f"{cidr!r} is not a network such as 192.168.1.0/24") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise InputError("cidr", "only IPv4 networks can be scanned (Wake-on-LAN and ARP are IPv4)")
    if network.prefixlen < settings.discovery_max_prefix and not force:
        raise InputError(
            "cidr",
            f"{network} has {network.num_addresses} addresses, more than a /{settings.discovery_max_prefix};"
            " scan smaller ranges or force it (--force)",
        )
    return network


# ------------------------------------------------------------------ the kernel's view


async def _ip_json(*args: str) -> list[dict[str, Any]] | None:
    """``ip -j ARGS`` parsed, run in this thread's network namespace; None without iproute2."""
    ip_binary = shutil.which("ip")
    if ip_binary is None:
        return None
    # The child is forked from this thread, so it sees this thread's network namespace.
    process = await asyncio.create_subprocess_exec(
        ip_binary, "-j", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        return None
    parsed: list[dict[str, Any]] = json.loads(output or b"[]")
    return parsed


async def local_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets this namespace's interfaces are on (for the broadcast of nodes found in them)."""
    networks = []
    for link in await _ip_json("-4", "addr", "show") or []:
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and info.get("scope") != "host":
                networks.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return networks


async def neighbours() -> dict[str, tuple[str | None, str]]:
    """The IPv4 neighbour table of this thread's network namespace: ip → (MAC or None, state)."""
    entries = await _ip_json("-4", "neigh", "show")
    if entries is None:
        return _proc_arp()
    table: dict[str, tuple[str | None, str]] = {}
    for entry in entries:
        mac = entry.get("lladdr")
        table[entry["dst"]] = (mac.lower() if mac else None, "|".join(entry.get("state") or []))
    return table


def _proc_arp() -> dict[str, tuple[str | None, str]]:
    """Fallback without iproute2: /proc's ARP table (complete entries only, no state)."""
    table: dict[str, tuple[str | None, str]] = {}
    with contextlib.suppress(OSError), open("/proc/thread-self/net/arp") as handle:
        next(handle, None)
        for line in handle:
            parts = line.split()
            if len(parts) >= 4 and int(parts[2], 16) & 0x2:  # ATF_COM: the entry is resolved
                table[parts[0]] = (parts[3].lower(), "")
    return table


def _is_local(address: str) -> bool:
    """Whether this namespace owns ``address`` (binding to it succeeds only then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


async def icmp_sweep(addresses: Sequence[str], timeout: float) -> set[str]:
    """Addresses that answered one ICMP echo request within ``timeout`` s (raw socket: root/CAP_NET_RAW)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        raise InputError(
            "icmp", "ICMP probes need root (CAP_NET_RAW); leave --icmp off to use TCP only"
        ) from None
    loop = asyncio.get_running_loop()
    ident = os.getpid() & 0xFFFF
    wanted = set(addresses)
    answered: set[str] = set()
    done = asyncio.Event()

    def on_readable() -> None:
        while True:
            try:
                packet, (source, _port) = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            header = (packet[0] & 0x0F) * 4  # raw ICMP sockets receive the IP header too
            icmp = packet[header : header + 8]
            if len(icmp) < 8:
                continue
            kind, _code, _sum, reply_ident, _seq = struct.unpack("!BBHHH", icmp)
            if kind == _ICMP_ECHO_REPLY and reply_ident == ident and source in wanted:
                answered.add(source)
                if len(answered) == len(wanted):
                    done.set()

    with sock:
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), on_readable)
        try:
            for seq, address in enumerate(addresses):
                header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF)
                payload = b"mko-discover"
                packet = struct.pack(
                    "!BBHHH", _ICMP_ECHO_REQUEST, 0, _checksum(header + payload), ident, seq & 0xFFFF
                )
                try:
                    sock.sendto(packet + payload, (address, 0))
                except BlockingIOError:
                    await asyncio.sleep(0.001)  # the send buffer is full: let the kernel drain it
                    with contextlib.suppress(OSError):
                        sock.sendto(packet + payload, (address, 0))
                except OSError:
                    continue  # unreachable network or host: no answer is the answer
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)
        finally:
            loop.remove_reader(sock.fileno())
    return answered


async def _reverse_names(addresses: Sequence[str], timeout: float) -> dict[str, str]:
    """PTR names (or /etc/hosts names) of ``addresses``; lookups still pending at ``timeout`` are dropped."""
    if not addresses:
        return {}
    loop = asyncio.get_running_loop()
    names: dict[str, str] = {}
    # Own threads: a slow resolver must not occupy the loop's default executor, which others use.
    executor = ThreadPoolExecutor(max_workers=min(32, len(addresses)), thread_name_prefix="mko-rdns")

    async def one(address: str) -> None:
        with contextlib.suppress(OSError):
            name, _ = await loop.run_in_executor(
                executor, socket.getnameinfo, (address, 0), socket.NI_NAMEREQD
            )
            names[address] = name.rstrip(".").lower()

    try:
        tasks = [asyncio.ensure_future(one(address)) for address in addresses]
        await asyncio.wait(tasks, timeout=timeout)
        for task in tasks:
            task.cancel()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return names


# ------------------------------------------------------------------ the scan


def _live_hosts(
    results: dict[tuple[str, int], ProbeResult],
    echoed: set[str],
    table: dict[str, tuple[str | None, str]],
    wanted: set[str],
) -> dict[str, DiscoveredHost]:
    """Every address with a sign of life: an open or resetting port, an echo reply, a fresh ARP answer."""
    seen: dict[str, DiscoveredHost] = {}
    for (address, port), result in results.items():
        if result.ok or result.refused:
            host = seen.setdefault(address, DiscoveredHost(ip=address))
            if "tcp" not in host.seen_by:
                host.seen_by.append("tcp")
            if result.ok:
                host.open_ports.append(port)
    for address in echoed:
        seen.setdefault(address, DiscoveredHost(ip=address)).seen_by.append("icmp")
    for address, (mac, state) in table.items():
        if address in wanted and mac and set(state.split("|")) & _NEIGH_ALIVE:
            seen.setdefault(address, DiscoveredHost(ip=address)).seen_by.append("arp")
    return seen


async def discover(
    sessions: sessionmaker[Session], settings: Settings, request: DiscoverRequest
) -> DiscoveryResult:
    """Scan ``request.cidr`` and match what answered against the inventory (adds nothing).

    Database work runs in worker threads with short sessions of its own, never across the scan.
    """
    network = _network(request.cidr, settings, request.force)
    ports = parse_ports(request.ports, settings.discovery_ports)
    if not ports and not request.icmp:
        raise InputError("ports", "give at least one TCP port, or probe with ICMP only (--icmp)")
    if request.add and request.cluster_id is None:
        raise InputError("cluster_id", "name the cluster the new nodes join (--cluster)")
    if request.cluster_id is not None:
        cluster_id = request.cluster_id
        await in_thread_session(sessions, lambda session: get_cluster(session, cluster_id))
    addresses = [str(a) for a in (network.hosts() if network.num_addresses > 2 else network)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    targets = [(address, port) for address in addresses for port in ports]
    probing = probe_many(targets, settings.discovery_timeout, settings.discovery_concurrency)
    if request.icmp:
        results, echoed = await asyncio.gather(probing, icmp_sweep(addresses, settings.discovery_timeout))
    else:
        results, echoed = await probing, set()
    table = await neighbours()
    subnets = await local_networks()

    seen = _live_hosts(results, echoed, table, set(addresses))
    local = sorted((a for a in seen if _is_local(a)), key=ipaddress.IPv4Address)
    for address in local:
        del seen[address]
    hosts = sorted(seen.values(), key=lambda h: ipaddress.IPv4Address(h.ip))
    for host in hosts:
        mac, _state = table.get(host.ip, (None, ""))
        host.mac = mac if mac and mac != "00:00:00:00:00:00" else None
        host.open_ports.sort()
        where = ipaddress.IPv4Address(host.ip)
        on_link = [n for n in subnets if where in n]
        host.prefix_len = max(n.prefixlen for n in on_link) if on_link else None
    if request.resolve:
        names = await _reverse_names([h.ip for h in hosts], settings.discovery_timeout * 2)
        for host in hosts:
            host.hostname = names.get(host.ip)
    await in_thread_session(sessions, lambda session: _mark_known(session, hosts))
    return DiscoveryResult(
        cidr=str(network),
        ports=ports,
        icmp=request.icmp,
        addresses=len(addresses),
        seconds=round(loop.time() - started, 3),
        hosts=hosts,
        skipped_local=local,
    )


def _mark_known(session: Session, hosts: Sequence[DiscoveredHost]) -> None:
    by_ip: dict[str, Node] = {}
    by_mac: dict[str, Node] = {}
    for node in session.scalars(select(Node)):
        by_ip.setdefault(node.ip_address, node)
        if node.wol_mac_address:
            by_mac[node.wol_mac_address] = node
    for host in hosts:
        host.known_by, host.node_id, host.node_hostname = [], None, None
        match_ip = by_ip.get(host.ip)
        match_mac = by_mac.get(host.mac) if host.mac else None
        found = match_ip or match_mac
        if found is None:
            continue
        host.node_id, host.node_hostname = found.id, found.hostname
        host.known_by = [k for k, m in (("ip", match_ip), ("mac", match_mac)) if m is found]


# ------------------------------------------------------------------ adding


def _node_name(session: Session, host: DiscoveredHost) -> str:
    candidates = []
    if host.hostname:
        candidates.append(host.hostname.split(".")[0])
    candidates.append("host-" + host.ip.replace(".", "-"))
    for candidate in candidates:
        name = _HOSTNAME_SAFE.sub("-", candidate.lower()).strip("-")[:63]
        try:
            validation.validate_hostname(name, "hostname")
        except InputError:
            continue
        if session.scalars(select(Node.id).where(Node.hostname == name)).first() is None:
            return name
    return "host-" + host.ip.replace(".", "-") + f"-{len(candidates)}"


def add_discovered(
    session: Session, result: DiscoveryResult, *, cluster_id: int, actor: Actor
) -> DiscoveryResult:
    """Add each new host as a node of ``cluster_id`` (WoL enabled when its MAC is known); one operation."""
    get_cluster(session, cluster_id)
    new = result.new_hosts
    operation = start_operation(
        session,
        kind="discover_add",
        target_type="cluster",
        target_id=cluster_id,
        actor=actor,
        parameters={"cidr": result.cidr, "ports": result.ports, "hosts": [h.ip for h in new]},
        summary=f"adding {len(new)} discovered host(s)",
    )
    added = 0
    for host in new:
        data = NodeCreate.model_validate(
            {
                "hostname": _node_name(session, host),
                "ip_address": host.ip,
                "cluster_id": cluster_id,
                "wol_enabled": host.mac is not None,
                "wol_mac_address": host.mac,
                "wol_prefix_len": host.prefix_len,
                "probe_port": None if not host.open_ports or 22 in host.open_ports else host.open_ports[0],
                "description": "found by mko discover",
            }
        )
        try:
            node = create_node(session, data)
        except (InputError, ConflictError) as exc:
            session.rollback()
            record_step(
                session, operation, name=f"add {host.ip}", status=OperationStatus.FAILED, message=str(exc)
            )
            continue
        host.added_node_id = node.id
        added += 1
        record_step(
            session,
            operation,
            name=f"add {host.ip}",
            node_id=node.id,
            status=OperationStatus.SUCCEEDED,
            message=f"node {node.id} {node.hostname}, MAC {host.mac or 'unknown (WoL off)'}",
        )
    status = (
        OperationStatus.SUCCEEDED
        if added == len(new)
        else (OperationStatus.PARTIAL if added else OperationStatus.FAILED)
    )
    if not new:
        status = OperationStatus.SUCCEEDED
    finish_operation(session, operation, status=status, summary=f"added {added} of {len(new)} new host(s)")
    result.operation_id = operation.id
    return result


async def discover_and_add(
    sessions: sessionmaker[Session], settings: Settings, request: DiscoverRequest, actor: Actor
) -> DiscoveryResult:
    """:func:`discover`, then :func:`add_discovered` when the request asks for it."""
    result = await discover(sessions, settings, request)
    cluster_id = request.cluster_id
    if request.add and cluster_id is not None:
        await in_thread_session(
            sessions, lambda session: add_discovered(session, result, cluster_id=cluster_id, actor=actor)
        )
    return result
