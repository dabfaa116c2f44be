"""Benchmark: reachability checks of 1,000 addresses, the way the background refresher makes them.

Two fleets, each of 1,000 nodes stored in a throw-away SQLite database:

* loopback: nodes at 127.0.x.y (every 127/8 address is local); half of them have a listener on the
  probe port (up), half answer with a TCP reset (down). Measures ``probe_nodes`` (probing only) and
  ``Refresher.refresh`` (read the nodes, probe, store every result), twice: first pass (every node
  changes state) and a steady-state pass;
* lab (root only): a virtual LAN (network namespaces) whose /22 holds 3 live nodes and 997 addresses
  nobody answers: their probes end at the connect timeout (ARP gets no reply), the worst case.

Target: a 1,000-node check within 2 s. A benchmark reports; it does not fail on a missed target.
Run with ``python bench/probe.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import resource
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import insert

from mko.platform.db.models.inventory import Node
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade
from mko.wol.reachability import Refresher, probe_nodes

NODES = 1_000
PORT = 22_022
TIMEOUT = 1.0
TARGET_S = 2.0


def _raise_fd_limit() -> None:
    # Each probe in flight and each listener holds a descriptor; 1,000 of each exceed the usual 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192 <= hard or (soft < 8192 and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, hard))


def _loopback_addresses() -> list[str]:
    first = int(ipaddress.IPv4Address("127.0.1.1"))
    return [str(ipaddress.IPv4Address(first + i)) for i in range(NODES)]


@contextlib.contextmanager
def _listeners(addresses: list[str]) -> Iterator[None]:
    sockets = []
    try:
        for address in addresses:
            sockets.append(socket.create_server((address, PORT), backlog=64))
        yield
    finally:
        for sock in sockets:
            sock.close()


def _fleet(directory: Path, addresses: list[str], port: int) -> str:
    url = f"sqlite:///{directory / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    rows = [
        {"hostname": f"n{i}", "ip_address": address, "probe_port": port, "ssh_port": 22}
        for i, address in enumerate(addresses)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Node), rows)
    engine.dispose()
    return url


async def _measure(url: str) -> dict[str, float]:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    refresher = Refresher(factory, interval=30, timeout=TIMEOUT)
    figures: dict[str, float] = {}
    try:
        with factory() as session:
            nodes = list(session.query(Node))
            session.expunge_all()
        started = time.perf_counter()
        results = await probe_nodes(nodes, TIMEOUT)
        figures["probe_only_s"] = time.perf_counter() - started
        figures["up"] = sum(1 for r in results.values() if r.up)
        for label in ("refresh_first_s", "refresh_steady_s"):
            started = time.perf_counter()
            await refresher.refresh()
            figures[label] = time.perf_counter() - started
    finally:
        engine.dispose()
    return figures


def _report(name: str, figures: dict[str, float]) -> None:
    worst = max(figures["probe_only_s"], figures["refresh_first_s"], figures["refresh_steady_s"])
    verdict = "within" if worst <= TARGET_S else "OVER"
    print(
        f"{name}: {NODES} addresses, {int(figures['up'])} up | probe only {figures['probe_only_s']:.3f} s"
        f" | refresh (probe + store) first {figures['refresh_first_s']:.3f} s,"
        f" steady {figures['refresh_steady_s']:.3f} s | {verdict} the {TARGET_S:.0f} s target"
    )


def loopback() -> None:
    """Half up, half refused, all on 127.0.x.y."""
    addresses = _loopback_addresses()
    with tempfile.TemporaryDirectory() as tmp, _listeners(addresses[::2]):
        url = _fleet(Path(tmp), addresses, PORT)
        _report("loopback", asyncio.run(_measure(url)))


def lab() -> None:
    """3 live nodes and 997 silent addresses in a /22 of network namespaces."""
    from mko.lab.harness import RunningLab
    from mko.lab.netns import enter_netns

    with RunningLab.start(f"mkb{os.getpid() % 10000}", 3, subnet="10.213.0.0/22") as running:
        for node in running.nodes:
            node.power.power_on()
            node.power.wait_booted(5)
        live = [node.ip for node in running.nodes]
        hosts = [
            str(a) for a in running.lab.subnet.hosts() if str(a) not in live and str(a) != running.lab.orch_ip
        ]
        addresses = live + hosts[: NODES - len(live)]
        with tempfile.TemporaryDirectory() as tmp:
            url = _fleet(Path(tmp), addresses, 2222)
            with enter_netns(running.lab.orch):
                _report("lab /22 (997 silent)", asyncio.run(_measure(url)))


def main() -> None:
    """Run both fleets and print one line each."""
    _raise_fd_limit()
    loopback()
    if os.geteuid() == 0:
        lab()
    else:
        print("lab: skipped (network namespaces need root)")


if __name__ == "__main__":
    main()
