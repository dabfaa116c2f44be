"""Two lab subnets joined by a router: a remote site (a wake agent's LAN) beside the orchestrator's.

Magic packets do not cross routers, which is why wake agents exist. To test one, build two labs on two
subnets (two bridges) and join them with :func:`join_labs`::

    P-lan  (10.213.0.0/24)  P-orch .1 (the orchestrator), P-n1 …, P-rt .254 ──┐
                                                                              │ P-rt: ip_forward=1
    Q-lan  (10.214.0.0/24)  Q-orch .1 (the agent),        Q-n1 …, P-rt .254 ──┘

The orchestrator's namespace keeps its single interface on the first subnet and gets only a route to
the second one via the router (still no default route); the agent's namespace gets the route back. So
the agent reaches the orchestrator's API, while any broadcast stays on the subnet it was sent on.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from mko.lab.netns import Lab, _ip_batch, delete_netns
from mko.platform.errors import LabError

__all__ = ["ROUTER_HOST", "Router", "join_labs"]

#: Host number of the router on each subnet (.254 of a /24).
ROUTER_HOST = 254


@dataclass
class Router:
    """A namespace forwarding between the subnets of two labs; :meth:`destroy` removes it."""

    netns: str
    addresses: dict[str, str]  # lab prefix -> the router's address on that lab's subnet
    _destroyed: bool = field(default=False, init=False, repr=False)

    def destroy(self) -> None:
        """Delete the router's namespace (its legs on both bridges go with it); safe to call twice."""
        if not self._destroyed:
            delete_netns([self.netns])
            self._destroyed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()


def _router_address(lab: Lab, host: int) -> str:
    address = lab.subnet.network_address + host
    if address not in lab.subnet or address == lab.subnet.broadcast_address:
        raise LabError(f"the router's host number {host} does not fit {lab.subnet}")
    if any(ipaddress.IPv4Address(n.ip) == address for n in lab.nodes) or str(address) == lab.orch_ip:
        raise LabError(f"{address} of {lab.prefix} is already used; pick another router host number")
    return str(address)


def join_labs(first: Lab, second: Lab, *, host: int = ROUTER_HOST) -> Router:
    """Route between two labs' subnets through a new namespace ``<first prefix>-rt``.

    Only the two orch namespaces get a route to the other subnet; nodes keep theirs (via their orch).
    """
    if first.subnet.overlaps(second.subnet):
        raise LabError(f"the labs' subnets {first.subnet} and {second.subnet} overlap")
    netns = f"{first.prefix}-rt"
    legs = [(first, "eth1", _router_address(first, host)), (second, "eth2", _router_address(second, host))]
    router = Router(netns, {lab.prefix: address for lab, _, address in legs})
    ip = shutil.which("ip")
    if ip is None:
        raise LabError("the iproute2 'ip' command is missing (apt-get install -y iproute2)")
    delete_netns([netns])  # leftovers of an earlier run with the same prefix
    try:
        _ip_batch(
            [f"netns add {netns}"]
            + [
                f"link add {name} netns {netns} type veth peer name v-rt netns {lab.lan}"
                for lab, name, _ in legs
            ]
        )
        for lab, _, _ in legs:
            _ip_batch([f"link set v-rt master {lab.bridge} up"], netns=lab.lan)
        _ip_batch(
            ["link set lo up"]
            + [
                line
                for lab, name, address in legs
                for line in (f"addr add {address}/{lab.prefix_len} brd + dev {name}", f"link set {name} up")
            ],
            netns=netns,
        )
        # ip_forward is per namespace and off in a new one; `ip netns exec` also mounts its /proc/sys view.
        subprocess.run(
            [ip, "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        _ip_batch([f"route add {second.subnet} via {legs[0][2]}"], netns=first.orch)
        _ip_batch([f"route add {first.subnet} via {legs[1][2]}"], netns=second.orch)
    except BaseException:
        router.destroy()
        raise
    return router
