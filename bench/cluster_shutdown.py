"""Benchmark: graceful shutdown and recovery of a lab cluster over real SSH.

A lab of NODES network namespaces, each running its own OpenSSH sshd with the simulated MicroK8s
(mko.lab.microk8s: commands answer at once, a started node turns Ready 0.3 s later); CONTROL_PLANES
control planes, the rest workers joined ``--worker``. From the orch namespace it measures:

* making the plan (what ``--dry-run`` costs);
* the whole shutdown; its worker phase (all workers in parallel) against the sum of the workers' own
  chains (what a node-after-node loop would take); the control-plane phase; the mean time of each kind
  of step (a drain or a stop is one SSH session; a power-off waits until the node's SSH port closes,
  which includes the lab's own power-off simulation, done one node at a time);
* the recovery after every node was powered on: SSH up, ``microk8s start`` everywhere, every node
  Ready, uncordon;
* then the same cycle with the Kubernetes-aware steps (issue 21) on, against the cycle with them off:
  the datastore backup (``dbctl backup`` + copy to mko's host), the storage quiesce of WORKLOADS
  StatefulSets with Longhorn claims (scale to zero, wait for their volumes to detach, restore after the
  recovery), and one worker whose drain a PodDisruptionBudget blocks (grace 1 s, then
  ``--disable-eviction``): what each step adds, and the whole difference;
* the preflight (``mko cluster check``) of every node: SSH, sudo (root: not applicable), the kubelet
  args, configuration and logind drop-ins read over SSH, Wake-on read with ethtool.

The simulated commands take no time, so the figures are mko's own overhead plus the lab's. Needs root
and openssh-server. Reports figures; never fails on time. Run with ``python bench/cluster_shutdown.py``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from mko.cluster.options import update_options
from mko.cluster.plan import plan_shutdown
from mko.cluster.preflight import check_nodes, check_targets
from mko.cluster.recovery import run_recovery, start_recovery
from mko.cluster.shutdown import run_shutdown, start_shutdown
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.microk8s import Microk8sCluster, configure_microk8s
from mko.lab.netns import enter_netns
from mko.lab.nodefiles import graceful_shutdown
from mko.operations.records import Actor
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade
from mko.platform.settings import Settings

NODES = 20
CONTROL_PLANES = 3
WORKLOADS = 10
ACTOR = Actor("bench")
K8S_STEPS = ("backup", "quiesce", "longhorn volumes", "fallback", "datastore", "restore workloads")


def _report_steps(factory: sessionmaker[Session], operation_id: int, total: float) -> None:
    with factory() as session:
        steps = [s for s in session.get_one(Operation, operation_id).steps if s.node_id is not None]
    first = min(s.started_at for s in steps if s.started_at)
    per_node: dict[str, float] = {}
    per_action: dict[str, list[float]] = {}
    worker_end = first
    for step in steps:
        assert step.started_at is not None and step.finished_at is not None
        action, host = step.name.split(" ", 1)
        seconds = (step.finished_at - step.started_at).total_seconds()
        per_node[host] = per_node.get(host, 0.0) + seconds
        per_action.setdefault(action, []).append(seconds)
        if int(host.removeprefix("lab-n")) > CONTROL_PLANES:
            worker_end = max(worker_end, step.finished_at)
    workers = [h for h in per_node if int(h.removeprefix("lab-n")) > CONTROL_PLANES]
    worker_phase = (worker_end - first).total_seconds()
    print(f"shutdown, {NODES} nodes ({CONTROL_PLANES} control planes): {total:.2f} s")
    print(
        f"  workers in parallel: {worker_phase:.2f} s for {len(workers)} nodes"
        f" (their chains one after another: {sum(per_node[h] for h in workers):.2f} s)"
    )
    print(f"  control planes one at a time, drain host last: {total - worker_phase:.2f} s")
    means = ", ".join(f"{a} {statistics.mean(v) * 1000:.0f} ms" for a, v in per_action.items())
    print(f"  mean step: {means}")


def _k8s_steps(factory: sessionmaker[Session], *operation_ids: int) -> dict[str, float]:
    """Seconds of the Kubernetes-aware steps (the drain a budget blocked counted with its fallback)."""
    found: dict[str, float] = {}
    with factory() as session:
        for operation_id in operation_ids:
            for step in session.get_one(Operation, operation_id).steps:
                kind = next((k for k in K8S_STEPS if step.name.startswith(k)), None)
                if step.name.startswith("drain ") and step.detail.get("blocked_pods"):
                    kind = "fallback"
                if kind is None or step.started_at is None or step.finished_at is None:
                    continue
                seconds = (step.finished_at - step.started_at).total_seconds()
                found[kind] = found.get(kind, 0.0) + seconds
    return found


async def _cycle(
    running: RunningLab, factory: sessionmaker[Session], settings: Settings, cluster: int
) -> tuple[float, float, list[int]]:
    with factory() as session:
        started = time.perf_counter()
        plan = await plan_shutdown(session, settings, cluster, force=False)
        print(f"plan (dry run), {NODES} nodes: {(time.perf_counter() - started) * 1000:.0f} ms")
        prepared = start_shutdown(session, plan, ACTOR)
    started = time.perf_counter()
    done = await run_shutdown(factory, settings, prepared)
    assert done.status == OperationStatus.SUCCEEDED, done.summary
    shutdown_seconds = time.perf_counter() - started
    _report_steps(factory, done.id, shutdown_seconds)
    running.power_on_all(timeout=60)
    with factory() as session:
        recovery = start_recovery(session, cluster, ACTOR, 120)
    started = time.perf_counter()
    recovered = await run_recovery(factory, settings, recovery)
    assert recovered.status == OperationStatus.SUCCEEDED, recovered.summary
    recovery_seconds = time.perf_counter() - started
    print(
        f"recovery after power-on (start, every node Ready incl. the 0.3 s simulated kubelet start,"
        f" uncordon): {recovery_seconds:.2f} s — {recovered.summary}"
    )
    return shutdown_seconds, recovery_seconds, [done.id, recovered.id]


def _kubernetes_aware(simulated: Microk8sCluster, factory: sessionmaker[Session], cluster: int) -> None:
    """Turn the issue-21 steps on: workloads with Longhorn claims, one budget-blocked worker."""
    names = [f"lab-n{i}" for i in range(1, NODES + 1)]
    workloads = [
        {
            "ns": "bench",
            "kind": "StatefulSet",
            "name": f"db{i}",
            "replicas": 1,
            "labels": {"app": f"db{i}"},
            "claim_templates": [{"name": "data", "storageClass": "longhorn"}],
        }
        for i in range(WORKLOADS)
    ]
    volumes = [{"name": f"pvc-db{i}", "pvc": f"bench/data-db{i}-0"} for i in range(WORKLOADS)]
    simulated.configure(
        names[:CONTROL_PLANES],
        names[CONTROL_PLANES:],
        fail_drain=[names[-1]],
        workloads=workloads,
        longhorn={"volumes": volumes, "detach_delay": 0},
        retry_delay=0.2,
    )
    for name in names:  # the nodes were up: configure() only reset the simulation's settings
        simulated.set_node(name, cordoned=False)
    with factory() as session:
        update_options(session, cluster, {"backup": True, "quiesce": True, "drain_grace": 1})


def _preflight(factory: sessionmaker[Session], settings: Settings, cluster: int) -> None:
    with factory() as session:
        targets = check_targets(session, cluster)
    started = time.perf_counter()
    report = asyncio.run(check_nodes(targets, settings))
    elapsed = time.perf_counter() - started
    print(f"preflight (mko cluster check), {NODES} nodes: {elapsed:.2f} s — {report.summary()}")


def main() -> None:
    """Build the lab, shut the cluster down, recover it, print one line per figure."""
    if os.geteuid() != 0:
        print("cluster_shutdown: skipped (network namespaces need root)")
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        RunningLab.start(f"mkb{os.getpid() % 10000}", NODES, ssh=True, boot_delay=0.1) as running,
    ):
        simulated = configure_microk8s(running, control_planes=CONTROL_PLANES)
        running.power_on_all(timeout=60)
        known_hosts = Path(tmp) / "known_hosts"
        known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")
        url = f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url, ssh_known_hosts=known_hosts, probe_interval=0.1)
        engine = make_engine(url)
        upgrade(engine)
        factory = make_session_factory(engine)
        with factory() as session:
            cluster, _ = register_lab(session, running, control_planes=CONTROL_PLANES)
        time.sleep(0.5)  # every node Ready
        with factory() as session:
            update_options(session, cluster.id, {"backup": False, "quiesce": False})
        for node in running.nodes:
            assert node.system is not None
            graceful_shutdown(node.system)
        with enter_netns(running.lab.orch):
            _preflight(factory, settings, cluster.id)
            print("-- without the Kubernetes-aware steps")
            plain = asyncio.run(_cycle(running, factory, settings, cluster.id))
            _kubernetes_aware(simulated, factory, cluster.id)
            print(f"-- with them: backup, {WORKLOADS} Longhorn StatefulSets quiesced, one PDB-blocked drain")
            aware = asyncio.run(_cycle(running, factory, settings, cluster.id))
        steps = _k8s_steps(factory, *aware[2])
        print(
            f"Kubernetes-aware steps, {NODES} nodes: shutdown +{aware[0] - plain[0]:.2f} s"
            f" ({plain[0]:.2f} → {aware[0]:.2f} s), recovery +{aware[1] - plain[1]:.2f} s"
            f" ({plain[1]:.2f} → {aware[1]:.2f} s)"
        )
        print("  " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in steps.items()))
        print("  (fallback: the 1 s drain grace, the budget lookup and the --disable-eviction drain)")
        assert all(n["ready"] and not n["cordoned"] for n in simulated.nodes().values())
        engine.dispose()


if __name__ == "__main__":
    main()
