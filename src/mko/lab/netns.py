"""Network namespaces as a virtual LAN: an orchestrator and some nodes on one bridge, all off the host.

Layout of a lab with prefix ``P`` (see docs/lab.md, "A virtual LAN")::

    P-lan    bridge br0; one port v-orch, v-n1, v-n2, … per host (the "switch", in its own namespace
             so nothing touches the host's interfaces)
    P-orch   veth0 = 10.213.0.1/24, NO default route: limited broadcast (255.255.255.255) then needs an
             explicit source interface, exactly as on a multi-homed orchestrator host
    P-n1 …   veth0 = 10.213.0.11/24, .12, …; default route via .1 (Ansible facts and default-route
             detection need one); MAC 02:13:00:00:00:11, … (locally administered, readable)

The orchestrator side of a test runs inside ``P-orch`` by switching the current thread with
:func:`enter_netns`; every socket keeps the namespace it was created in, so::

    with enter_netns(lab.orch):
        asyncio.run(send_wake(...))   # the loop's new sockets (and its executor threads) live in P-orch
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from mko.lab.macaddr import normalize_mac
from mko.platform.errors import LabError

__all__ = [
    "DEFAULT_SUBNET",
    "Lab",
    "LabNode",
    "NodeSpec",
    "cleanup_stale",
    "default_mac",
    "delete_netns",
    "enter_netns",
    "kill_netns_processes",
    "list_netns",
    "netns_path",
    "netns_pids",
]

NETNS_DIR = "/run/netns"
DEFAULT_SUBNET = "10.213.0.0/24"
CLONE_NEWNET = 0x40000000
# Node addresses start at .11 so .2-.10 stay free for extra services (a fake BMC, a UPS server, …).
FIRST_NODE_HOST = 11
INTERFACE = "veth0"
BRIDGE = "br0"

_PREFIX = re.compile(r"[a-z][a-z0-9]{0,11}")
# Node names become the bridge-port name "v-NAME", which must fit IFNAMSIZ (15 characters).
_NODE_NAME = re.compile(r"[a-z][a-z0-9]{0,10}")
_RESERVED_NAMES = frozenset({"lan", "orch"})
_IP_TIMEOUT = 30.0
_TERM_GRACE = 2.0


# --------------------------------------------------------------------------- namespaces as such

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def netns_path(name: str) -> str:
    """Return the bind-mount path of a named namespace (/run/netns/NAME)."""
    if not name or "/" in name or name in (".", ".."):
        raise LabError(f"{name!r} is not a network namespace name")
    return os.path.join(NETNS_DIR, name)


@contextlib.contextmanager
def enter_netns(name: str) -> Iterator[None]:
    """Run the block with the current thread in namespace NAME; sockets made inside stay there."""
    # setns() moves only the calling thread (Python threads are OS threads); other threads are untouched,
    # and threads started inside the block inherit the namespace.
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LabError(f"network namespace {name!r} does not exist") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


def join_netns(name: str) -> None:
    """Move this process's main thread into namespace NAME for good (before it starts any thread).

    Threads started afterwards inherit it, so every socket the process makes is inside: the CLI run with
    ``MKO_NETNS`` sends its magic packets, SSH and NUT reads into the lab's LAN, never the host's.
    """
    if _ns_key(netns_path(name)) == _ns_key("/proc/thread-self/ns/net"):
        return
    if threading.current_thread() is not threading.main_thread() or threading.active_count() > 1:
        raise LabError("a process joins a network namespace before it starts threads")
    needs_root = f"MKO_NETNS={name} needs root to enter the lab's network: run as root (sudo -i) or sudo -E"
    try:
        target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LabError(
            f"network namespace {name!r} (MKO_NETNS) does not exist: is the lab up? (`mko lab up`, or"
            ' forget it with `eval "$(mko lab env --unset)"`)'
        ) from None
    except PermissionError:
        raise LabError(needs_root) from None
    try:
        _setns(target)
    except PermissionError:
        raise LabError(needs_root) from None
    finally:
        os.close(target)


def list_netns() -> list[str]:
    """Return the names of all named network namespaces (like ``ip netns list``), sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _ns_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pids_by_netns(names: Iterable[str]) -> dict[str, list[int]]:
    # One scan of /proc for all namespaces, the same test ``ip netns pids`` makes (nsfs device + inode).
    keys = {key: name for name in names if (key := _ns_key(netns_path(name))) is not None}
    found: dict[str, list[int]] = {name: [] for name in keys.values()}
    if not keys:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        name = keys.get(_ns_key(f"/proc/{entry.name}/ns/net") or (-1, -1))
        if name is not None:
            found[name].append(int(entry.name))
    return found


def netns_pids(name: str) -> list[int]:
    """Return the pids of processes whose network namespace is NAME (like ``ip netns pids NAME``)."""
    return _pids_by_netns([name]).get(name, [])


def kill_netns_processes(names: Iterable[str], grace: float = _TERM_GRACE) -> list[int]:
    """SIGTERM every process in the namespaces, SIGKILL what is left after GRACE s; return the pids hit."""
    own = os.getpid()
    pids = sorted({pid for pids in _pids_by_netns(names).values() for pid in pids if pid != own})
    # pidfds make the signal and the wait immune to pid reuse and let poll() wait for exit without sleeps.
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[pid] = os.pidfd_open(pid)
    try:
        for fd in fds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGTERM)
        poller = select.poll()
        for fd in fds.values():
            poller.register(fd, select.POLLIN)
        alive = set(fds.values())
        deadline = time.monotonic() + grace
        while alive and (remaining := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                alive.discard(fd)
        for fd in alive:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        for fd in fds.values():
            os.close(fd)
    return pids


def _ip_binary() -> str:
    path = shutil.which("ip")
    if path is None:
        raise LabError("the iproute2 'ip' command is missing (apt-get install -y iproute2)")
    return path


def _ip_batch(lines: Sequence[str], *, netns: str | None = None, force: bool = False) -> None:
    # One `ip -batch` process per namespace keeps lab creation at a few milliseconds.
    cmd = [_ip_binary()]
    if netns is not None:
        cmd += ["-n", netns]
    if force:
        cmd.append("-force")
    cmd += ["-batch", "-"]
    proc = subprocess.run(
        cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False, timeout=_IP_TIMEOUT
    )
    if proc.returncode != 0:
        where = f" in {netns}" if netns else ""
        raise LabError(f"ip -batch{where} failed (rc {proc.returncode}): {proc.stderr.strip()}")


def delete_netns(names: Sequence[str]) -> None:
    """Kill the processes in the namespaces, then delete them; ones already gone are ignored."""
    present = [n for n in names if os.path.exists(netns_path(n))]
    if not present:
        return
    kill_netns_processes(present)
    # `ip netns del` only unmounts and unlinks; the kernel frees the namespace (and its veths, which
    # never live in the root namespace) once nothing references it any more.
    with contextlib.suppress(LabError):
        _ip_batch([f"netns del {n}" for n in present], force=True)
    left = [n for n in present if os.path.exists(netns_path(n))]
    if left:
        raise LabError(f"could not delete network namespaces {left}")


def cleanup_stale(prefix: str) -> list[str]:
    """Delete every namespace a previous lab with PREFIX left behind; return their names."""
    stale = [n for n in list_netns() if n.startswith(f"{prefix}-")]
    delete_netns(stale)
    return stale


# --------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class NodeSpec:
    """What a node may override; None means the lab's deterministic default."""

    name: str | None = None
    ip: str | None = None
    mac: str | None = None
    # Read by the power simulation (mko.lab.recorder.BootOnWake): False = the node never boots.
    wakeable: bool = True
    # Read by the node's system simulation (mko.lab.nodesys, labs started with ssh=True): the Wake-on
    # modes its NIC supports ("" = none, like a veth; "pumb" = no magic packet), its Wake-on after each
    # boot (None: g when supported, else d), and which service configures its network.
    nic_wol_supports: str = "pumbg"
    nic_wake_on_default: str | None = None
    network_service: str = "none"


@dataclass(frozen=True)
class LabNode:
    """A host of the lab: its namespace, address and network card."""

    name: str
    netns: str
    ip: str
    mac: str
    interface: str = INTERFACE
    wakeable: bool = True
    bridge_port: str = ""
    spec: NodeSpec = field(default_factory=NodeSpec)


def default_mac(host: int) -> str:
    """Return the lab MAC for host number HOST: 11 -> 02:13:00:00:00:11 (decimal digits, readable)."""
    if not 0 <= host < 1_000_000:
        raise LabError(f"host number {host} is out of range for a lab MAC")
    return f"02:13:00:{host // 10000:02d}:{host // 100 % 100:02d}:{host % 100:02d}"


def _plan_nodes(
    prefix: str,
    nodes: Sequence[NodeSpec] | int,
    subnet: ipaddress.IPv4Network,
    orch_ip: ipaddress.IPv4Address,
) -> list[LabNode]:
    specs = [NodeSpec() for _ in range(nodes)] if isinstance(nodes, int) else list(nodes)
    planned: list[LabNode] = []
    used_ips = {orch_ip}
    used_macs = {default_mac(1)}
    for index, spec in enumerate(specs, start=1):
        name = spec.name or f"n{index}"
        if not _NODE_NAME.fullmatch(name) or name in _RESERVED_NAMES:
            raise LabError(f"node name {name!r}: use 1-11 of [a-z0-9], starting with a letter, not lan/orch")
        ip = (
            ipaddress.IPv4Address(spec.ip)
            if spec.ip
            else subnet.network_address + FIRST_NODE_HOST + index - 1
        )
        if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
            raise LabError(f"node {name}: {ip} is not a host address of {subnet}")
        host = int(ip) - int(subnet.network_address)
        mac = normalize_mac(spec.mac) if spec.mac else default_mac(host)
        if ip in used_ips or mac in used_macs or any(n.name == name for n in planned):
            raise LabError(f"node {name}: name, IP {ip} or MAC {mac} is used twice")
        used_ips.add(ip)
        used_macs.add(mac)
        planned.append(
            LabNode(
                name=name,
                netns=f"{prefix}-{name}",
                ip=str(ip),
                mac=mac,
                wakeable=spec.wakeable,
                bridge_port=f"v-{name}",
                spec=spec,
            )
        )
    return planned


@dataclass
class Lab:
    """A built virtual LAN; make one with :meth:`Lab.create`, remove it with :meth:`destroy`."""

    prefix: str
    subnet: ipaddress.IPv4Network
    lan: str
    orch: str
    orch_ip: str
    orch_mac: str
    nodes: list[LabNode]
    orch_interface: str = INTERFACE
    bridge: str = BRIDGE
    _destroyed: bool = field(default=False, init=False, repr=False)

    @property
    def prefix_len(self) -> int:
        """Return the subnet's prefix length (24 for a /24)."""
        return self.subnet.prefixlen

    @property
    def broadcast(self) -> str:
        """Return the directed broadcast address of the subnet (e.g. 10.213.0.255)."""
        return str(self.subnet.broadcast_address)

    @property
    def namespaces(self) -> list[str]:
        """Return every namespace of the lab: lan, orch, then the nodes."""
        return [self.lan, self.orch, *(n.netns for n in self.nodes)]

    def node(self, name: str) -> LabNode:
        """Return the node called NAME (or whose namespace is NAME)."""
        for node in self.nodes:
            if name in (node.name, node.netns):
                return node
        raise KeyError(name)

    @classmethod
    def create(cls, prefix: str, nodes: Sequence[NodeSpec] | int, subnet: str = DEFAULT_SUBNET) -> Lab:
        """Build the lab, first deleting leftovers of an earlier lab with the same prefix."""
        if not _PREFIX.fullmatch(prefix):
            # No "-": cleanup matches "PREFIX-*", so "lab" must never match "lab-x-…" of another lab.
            raise LabError(f"lab prefix {prefix!r}: use 1-12 of [a-z0-9], starting with a letter")
        net = ipaddress.IPv4Network(subnet)
        if net.num_addresses < 4:
            raise LabError(f"subnet {subnet} is too small for a lab")
        orch_ip = net.network_address + 1
        lab = cls(
            prefix=prefix,
            subnet=net,
            lan=f"{prefix}-lan",
            orch=f"{prefix}-orch",
            orch_ip=str(orch_ip),
            orch_mac=default_mac(1),
            nodes=_plan_nodes(prefix, nodes, net, orch_ip),
        )
        cleanup_stale(prefix)
        try:
            lab._build()
        except BaseException:
            cleanup_stale(prefix)
            raise
        return lab

    def _build(self) -> None:
        plen = self.prefix_len
        hosts = [(self.orch, self.orch_mac, "v-orch"), *((n.netns, n.mac, n.bridge_port) for n in self.nodes)]
        # Both veth ends are created directly inside their namespaces: the host never sees them.
        _ip_batch(
            [f"netns add {ns}" for ns in self.namespaces]
            + [
                f"link add {INTERFACE} netns {ns} address {mac} type veth peer name {port} netns {self.lan}"
                for ns, mac, port in hosts
            ]
        )
        _ip_batch(
            ["link set lo up", f"link add {self.bridge} type bridge", f"link set {self.bridge} up"]
            + [f"link set {port} master {self.bridge} up" for _, _, port in hosts],
            netns=self.lan,
        )
        _ip_batch(
            [
                "link set lo up",
                f"addr add {self.orch_ip}/{plen} brd + dev {INTERFACE}",
                f"link set {INTERFACE} up",
            ],
            netns=self.orch,
        )
        for node in self.nodes:
            _ip_batch(
                [
                    "link set lo up",
                    f"addr add {node.ip}/{plen} brd + dev {INTERFACE}",
                    f"link set {INTERFACE} up",
                    f"route add default via {self.orch_ip}",
                ],
                netns=node.netns,
            )

    def destroy(self) -> None:
        """Kill every process in the lab's namespaces and delete them; safe to call twice."""
        if self._destroyed:
            return
        # Nodes first, the switch last, so no port is orphaned while processes still talk.
        delete_netns([*(n.netns for n in self.nodes), self.orch, self.lan])
        self._destroyed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()
