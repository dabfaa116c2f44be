"""Benchmark: API power drivers. Many Proxmox VMs started in one cluster wake; one IPMI power-on.

* a cluster of VMS virtual nodes on one Proxmox host (fakepve in its own process; a start task takes
  0.5 s): one ``wol wake-cluster`` through the service, with the driver's default parallelism and then
  one VM at a time (what a loop over the seed's placeholder would do); each VM costs status, start,
  task status, status: 4 HTTPS requests, plus one ``cluster/resources`` per run.
* one IPMI node against ipmi_sim: ``node power on`` verified by reading the chassis state back.

Uses the test peers (tests/support/peers.py); needs the dev dependencies and openipmi.
Reports figures; never fails on time. Run with ``python bench/power_drivers.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakepve.certs import make_cert
from pydantic import SecretStr

from mko.inventory import proxmox_hosts
from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import configure_wol, create_node
from mko.inventory.schemas import ClusterCreate, NodeCreate, ProxmoxHostCreate, WolConfigure
from mko.operations.records import Actor
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade
from mko.platform.settings import Settings
from mko.power.drivers.proxmox import ProxmoxDriver
from mko.wol.node_power import run_power, start_power
from mko.wol.wake import make_schedule, run_wake, start_wake
from support.peers import IpmiSim, free_port

VMS = 100
SEQUENTIAL_VMS = 20  # one at a time is slow; a smaller cluster shows the rate
PVE_PASSWORD = "bench-pw"  # noqa: S105 - a throwaway fake's login


def _serve_fakepve(directory: Path, vmids: range) -> tuple[subprocess.Popen[str], int, str]:
    """fakepve in its own process (so the client is measured, not the shared GIL), tasks instant."""
    cafile, keyfile, _ = make_cert(str(directory), hosts=("127.0.0.1",))
    guests = directory / "guests.json"
    guests.write_text(json.dumps({"guests": [{"vmid": v, "name": f"vm{v}", "start_secs": 2} for v in vmids]}))
    port = free_port()
    command = [sys.executable, "-m", "fakepve", str(guests), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--time-scale", "0.25", "--cert", cafile, "--key", keyfile, "--password", PVE_PASSWORD]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening" not in line:
        raise RuntimeError(f"fakepve did not start: {line}")
    return process, port, cafile


def _proxmox(directory: Path) -> None:
    process, port, cafile = _serve_fakepve(directory, range(1000, 1000 + VMS + SEQUENTIAL_VMS))
    try:
        settings = Settings(database_url=f"sqlite:///{directory / 'bench.db'}", log_dir=directory / "logs")
        engine = make_engine(settings.database_url)
        upgrade(engine)
        factory = make_session_factory(engine)
        clusters = []
        with factory() as session:
            host = proxmox_hosts.create_host(
                session,
                settings,
                ProxmoxHostCreate(
                    name="pve",
                    host="127.0.0.1",
                    port=port,
                    username="root@pam",
                    secret=SecretStr(PVE_PASSWORD),
                    ca_file=cafile,
                ),
            )
            for batch, size in enumerate((VMS, SEQUENTIAL_VMS)):
                cluster = create_cluster(session, ClusterCreate(name=f"vms{batch}"))
                clusters.append((cluster.id, size))
                for index in range(size):
                    vmid = 1000 + batch * VMS + index
                    node = NodeCreate(
                        hostname=f"vm{vmid}",
                        ip_address=f"10.{batch}.{index // 250}.{index % 250 + 1}",
                        cluster_id=cluster.id,
                        is_virtual_node=True,
                        proxmox_vm_id=vmid,
                        proxmox_host_id=host.id,
                        wol_enabled=True,
                    )
                    create_node(session, node)
        default = ProxmoxDriver.parallel
        for (cluster_id, size), (label, parallel) in zip(
            clusters, ((f"{default} at once", default), ("one VM at a time", 1)), strict=True
        ):
            ProxmoxDriver.parallel = parallel
            schedule = make_schedule(settings, retries=1, delay=0)
            with factory() as session:
                prepared = start_wake(
                    session,
                    target_type="cluster",
                    target_id=cluster_id,
                    schedule=schedule,
                    actor=Actor("bench"),
                )
            started = time.perf_counter()
            operation = asyncio.run(run_wake(factory, settings, prepared))
            elapsed = time.perf_counter() - started
            print(
                f"proxmox: cluster wake of {size} VMs, {label}: {elapsed:.2f} s"
                f" ({size / elapsed:.1f} VMs/s), {operation.summary}"
            )
        ProxmoxDriver.parallel = default
        engine.dispose()
    finally:
        process.terminate()
        process.wait(10)


def _ipmi(directory: Path) -> None:
    sim = IpmiSim(directory)
    try:
        settings = Settings(database_url=f"sqlite:///{directory / 'bench.db'}", log_dir=directory / "logs")
        engine = make_engine(settings.database_url)
        upgrade(engine)
        factory = make_session_factory(engine)
        with factory() as session:
            node = create_node(session, NodeCreate(hostname="bmc1", ip_address="10.0.0.5"))
            configure_wol(
                session,
                node.id,
                WolConfigure(
                    wol_method="ipmi",
                    bmc_address="127.0.0.1",
                    bmc_port=sim.port,
                    bmc_username=sim.USER,
                    bmc_password=SecretStr(sim.PASSWORD),
                ),
            )
            node_id = node.id
        for action in ("on", "off", "on"):
            with factory() as session:
                prepared = start_power(session, settings, node_id, action, actor=Actor("bench"))
            started = time.perf_counter()
            operation = asyncio.run(run_power(factory, settings, prepared))
            elapsed = time.perf_counter() - started
            print(
                f"ipmi: power {action}, verified by reading the chassis back: {elapsed * 1000:.0f} ms"
                f" ({operation.summary})"
            )
        engine.dispose()
    finally:
        sim.stop()


def main() -> None:
    """Print the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pve").mkdir()
        (root / "ipmi").mkdir()
        _proxmox(root / "pve")
        _ipmi(root / "ipmi")


if __name__ == "__main__":
    main()
