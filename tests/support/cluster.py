"""A lab cluster for shutdown and recovery tests: host keys trusted, nodes up, calls merged, the CLI
run where the orchestrator lives (the lab's orch namespace)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.microk8s import Microk8sCluster, configure_microk8s
from mko.lab.netns import enter_netns
from mko.lab.nodefiles import default_kubelet_args
from mko.platform.db.models.operations import Operation
from mko.platform.settings import Settings
from support.ups import wait_until

__all__ = [
    "DRAIN",
    "cluster_up",
    "one_operation",
    "orch_cli",
    "orch_process",
    "power_up",
    "stand_in_calls",
    "trust_all",
]

DRAIN = "--ignore-daemonsets --delete-emptydir-data --timeout=120s"


def trust_all(settings: Settings, running: RunningLab) -> None:
    """Record every node's host key as an operator who checked them would (the lab made the keys)."""
    settings.ssh_known_hosts.parent.mkdir(parents=True, exist_ok=True)
    settings.ssh_known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")


def power_up(running: RunningLab, cluster: Microk8sCluster, timeout: float = 5) -> None:
    """Power every node on and wait until all are Ready."""
    running.power_on_all()
    wait_until(
        lambda: (
            len(nodes := cluster.nodes()) == len(running.nodes) and all(n["ready"] for n in nodes.values())
        ),
        timeout,
        what="every node Ready",
    )


def cluster_up(
    settings: Settings,
    session: Session,
    lab_factory: Callable[..., RunningLab],
    nodes: int,
    control_planes: int = 1,
    **microk8s: Any,
) -> tuple[RunningLab, Microk8sCluster]:
    """A lab of ``nodes`` with sshd and MicroK8s (the first ``control_planes`` of them control planes),
    registered as cluster 1 with trusted host keys, every node on and Ready."""
    running = lab_factory(nodes, ssh=True, boot_delay=0.1)
    cluster = configure_microk8s(running, control_planes=control_planes, **microk8s)
    register_lab(session, running, control_planes=control_planes)
    for node in running.nodes:
        assert node.system is not None
        default_kubelet_args(node.system)
    trust_all(settings, running)
    power_up(running, cluster)
    return running, cluster


def stand_in_calls(running: RunningLab) -> list[tuple[str, str]]:
    """Every stand-in call of every node, oldest first: (hostname, "command args…"); boots left out."""
    entries = []
    for node in running.nodes:
        assert node.system is not None
        for call in node.system.calls():
            if call["cmd"] != "<boot>":
                entries.append((call["t"], node.hostname, " ".join([call["cmd"], *call["argv"]])))
    return [(host, command) for _, host, command in sorted(entries)]


def orch_cli(cli: CliRunner, running: RunningLab, *args: str, stdin: str | None = None) -> Any:
    """Run the CLI in the lab's orch namespace, where the orchestrator's packets and SSH start."""
    with enter_netns(running.lab.orch):
        return cli.invoke(app, list(args), input=stdin)


def orch_process(
    running: RunningLab, *args: str, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``mko ARGS`` as a process of its own in the orch namespace, as an operator's shell there would.

    Unlike :func:`orch_cli`, nothing of this test process (pyghmi's shared UDP sockets, made in the
    namespace of the first IPMI call) carries over from earlier tests.
    """
    command = ["ip", "netns", "exec", running.lab.orch, sys.executable, "-m", "mko", *args]
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ),
    )


def one_operation(session: Session, kind: str) -> Operation:
    """The only operation of ``kind``, read afresh with its steps."""
    session.expire_all()
    [operation] = session.scalars(select(Operation).where(Operation.kind == kind))
    _ = operation.steps
    return operation
