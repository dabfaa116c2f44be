"""Benchmark: `wol collect-mac` over real SSH to many lab nodes, parallel versus one at a time.

A lab of NODES network namespaces, each running its own OpenSSH sshd (mko.lab, ssh=True); every node
is registered without a MAC and its host key trusted. Measures, from the orch namespace:

* one SSH session (connect, verify the host key, log in, run one command) to one node;
* ``collect_macs`` over every node with the default parallelism, then with ``ssh_parallel=1`` (the
  seed's node-after-node loop);
* ``set_nic_wol`` on one node (connect, ip, ethtool ×2, persist, flag), the cost of one `wol enable`.

Needs root (network namespaces) and openssh-server. Reports figures; never fails on time.
Run with ``python bench/collect_mac.py``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import enter_netns
from mko.nic.collect import collect_macs
from mko.nic.wol_switch import set_nic_wol
from mko.operations.records import Actor
from mko.platform.db.models.inventory import Node
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade
from mko.platform.settings import Settings
from mko.ssh.client import SshTarget, connect

NODES = 30


async def _one_session(target: SshTarget, settings: Settings) -> float:
    started = time.perf_counter()
    async with connect(target, settings) as session:
        await session.run(["true"])
    return time.perf_counter() - started


def main() -> None:
    """Build the lab, run the measurements and print one line each."""
    if os.geteuid() != 0:
        print("collect_mac: skipped (network namespaces need root)")
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        RunningLab.start(f"mkc{os.getpid() % 10000}", NODES, ssh=True, subnet="10.213.0.0/24") as running,
    ):
        started = time.perf_counter()
        running.power_on_all(timeout=60)
        boot = time.perf_counter() - started
        known_hosts = Path(tmp) / "known_hosts"
        known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")
        url = f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url, ssh_known_hosts=known_hosts)
        engine = make_engine(url)
        upgrade(engine)
        factory = make_session_factory(engine)
        print(f"lab: {NODES} nodes, every sshd up in {boot:.2f} s")
        with factory() as session, enter_netns(running.lab.orch):
            _, nodes = register_lab(session, running, macs=False)
            target = SshTarget.of(nodes[0], settings)
            sessions = [asyncio.run(_one_session(target, settings)) for _ in range(5)]
            median = sorted(sessions)[2] * 1000
            print(f"one SSH session (connect, verify, login, run `true`): median {median:.0f} ms")
            for label, parallel in (("parallel", settings.ssh_parallel), ("one at a time", 1)):
                for node in session.query(Node):
                    node.wol_mac_address = None
                session.commit()
                run_settings = settings.model_copy(update={"ssh_parallel": parallel})
                started = time.perf_counter()
                operation = asyncio.run(collect_macs(session, run_settings, None, actor=Actor("bench")))
                elapsed = time.perf_counter() - started
                print(
                    f"collect-mac, {NODES} nodes, {label} (ssh_parallel={parallel}): {elapsed:.2f} s, "
                    f"{operation.summary.split(':')[0]}"
                )
            started = time.perf_counter()
            change = asyncio.run(
                set_nic_wol(session, settings, nodes[0].id, enable=True, actor=Actor("bench"))
            )
            print(
                f"wol enable on one node ({change.nic and change.nic['persistence']}): "
                f"{(time.perf_counter() - started) * 1000:.0f} ms"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
