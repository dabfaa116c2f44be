"""Operation owners with real processes: a CLI killed with SIGKILL, and `mko serve` restarting under a
CLI that is still working.

Every process here is a real ``python -m mko`` (the CLI in the lab's orch namespace where it wakes lab
nodes); the server is a real ``mko serve`` over TCP, started, killed and started again. Heartbeats run
every 0.5 s so the server's periodic clean-up passes many times while the CLI works.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import create_node
from mko.inventory.schemas import ClusterCreate, NodeCreate
from mko.lab.inventory import register_lab
from mko.lab.netns import NodeSpec
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.settings import Settings
from support.ups import wait_until

ROOT = Path(__file__).resolve().parents[3]
MKO = [sys.executable, "-m", "mko"]


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test's settings for child processes, with heartbeats every 0.5 s."""
    monkeypatch.setenv("MKO_OPERATION_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv("MKO_OPERATION_OWNER_TIMEOUT", "5")
    return dict(os.environ)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serve(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A real `mko serve`, answering /api/health; killed (SIGKILL) when the block ends, if still running."""
    port = _free_port()
    server = subprocess.Popen(
        [*MKO, "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, f"mko serve exited with {server.returncode}"
            assert time.monotonic() < deadline, "mko serve did not start"
            time.sleep(0.1)
        yield server
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(30)


def _operation(session: Session, kind: str) -> Operation | None:
    session.expire_all()
    found = session.scalars(select(Operation).where(Operation.kind == kind)).first()
    if found is not None:
        _ = found.steps
    return found


def test_a_cli_killed_mid_recovery_is_reported_interrupted_by_the_next_start(
    env: dict[str, str], session: Session
) -> None:
    cluster = create_cluster(session, ClusterCreate(name="home"))
    # Nothing listens there: the recovery keeps waiting for SSH until it is killed.
    port = _free_port()
    node = NodeCreate(hostname="n1", ip_address="127.0.0.1", ssh_port=port, cluster_id=cluster.id)
    create_node(session, node)
    cli = subprocess.Popen(
        [*MKO, "cluster", "recover", str(cluster.id), "--timeout", "600"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        running = wait_until(lambda: _operation(session, "cluster_recover"), 30, what="the recovery to start")
        assert (running.status, running.owner_pid, running.owner_host) == (
            OperationStatus.RUNNING,
            cli.pid,
            socket.gethostname(),
        )
        first_beat = running.heartbeat_at
        assert first_beat is not None
        wait_until(
            lambda: (
                (op := _operation(session, "cluster_recover"))
                and (op.heartbeat_at or first_beat) > first_beat
            ),
            10,
            what="a heartbeat of the CLI",
        )
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
    killed_at_beat = _operation(session, "cluster_recover")
    assert killed_at_beat is not None and killed_at_beat.status == OperationStatus.RUNNING
    last_beat = killed_at_beat.heartbeat_at
    assert last_beat is not None

    with _serve(env):
        # The server's start closes it before it answers: its process is gone, on this very host.
        closed = _operation(session, "cluster_recover")
        assert closed is not None
        expected = (
            f"interrupted: owner pid {cli.pid} on host {socket.gethostname()}"
            f" gone since {last_beat.isoformat(timespec='seconds')}"
        )
        assert (closed.status, closed.summary) == (OperationStatus.FAILED, expected)
        assert closed.result["interrupted"]["owner"]["pid"] == cli.pid
        assert all(step.status != OperationStatus.RUNNING for step in closed.steps)

    # Another recovery may start now; `mko operations show` names the dead owner.
    shown = subprocess.run(
        [*MKO, "operations", "show", str(closed.id)],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"pid {cli.pid} on {socket.gethostname()}" in shown.stdout
    assert "interrupted: owner pid" in shown.stdout


def test_serve_restarting_leaves_a_live_cli_wake_running_and_it_finishes_normally(
    env: dict[str, str], session: Session, lab_factory: Any
) -> None:
    # The nodes ignore magic packets: the wake runs (re-sending, probing) until the test powers them on.
    running = lab_factory([NodeSpec(wakeable=False), NodeSpec(wakeable=False)])
    register_lab(session, running)
    cli = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            running.lab.orch,
            *MKO,
            "wol",
            "wake-cluster",
            "1",
            "--wait",
            "--timeout",
            "120",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wake = wait_until(lambda: _operation(session, "wol_wake_cluster"), 30, what="the wake to start")
        assert (wake.status, wake.owner_pid) == (OperationStatus.RUNNING, cli.pid)
        first_beat = wake.heartbeat_at
        with _serve(env) as first:
            first.send_signal(signal.SIGKILL)  # the server crashes while the CLI works
        with _serve(env):
            # Started again: the wake is the live CLI's, so it stays running, through several clean-ups.
            time.sleep(2)
            during = _operation(session, "wol_wake_cluster")
            assert during is not None and during.status == OperationStatus.RUNNING, during and during.summary
            assert all(step.status == OperationStatus.RUNNING for step in during.steps)
            assert during.heartbeat_at is not None and first_beat is not None
            assert during.heartbeat_at > first_beat  # the CLI's heartbeat went on
            for node in running.nodes:
                node.power.power_on()
            _, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, err
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    done = _operation(session, "wol_wake_cluster")
    assert done is not None
    assert (done.status, done.summary) == (OperationStatus.SUCCEEDED, "2/2 node(s) up")
    assert "interrupted" not in done.result
