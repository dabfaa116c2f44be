"""Failover between two REAL `mko serve` processes on one REAL PostgreSQL, during a rule-triggered wake.

Both servers run in a lab's orch namespace (its nodes boot when their magic packet arrives) next to a
real upsd + dummy-ups. The UPS goes back on mains → the leader's power_restored rule wakes the cluster
→ the leader is SIGKILLed mid-wake → the UPS goes on battery while no instance leads. The other
server must take over, finish the SAME wake (each node woken once, one completed operation), and act
exactly once on the power_loss nobody was watching when it happened.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.ha.election import cluster_status
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.nut import NutServer
from mko.lab.postgres import PostgresServer
from mko.operations.kinds import RULE_OPERATION_KIND
from mko.platform.db.models.ha import UpsState
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.rules import ClusterAction
from mko.platform.db.models.ups import PowerEvent, UpsEvent
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade
from mko.platform.settings import Settings
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups
from support.ups import UpsLabFactory, wait_until

ROOT = Path(__file__).resolve().parents[3]
_ports = itertools.count(18611)


@pytest.fixture(scope="module")
def ha_lab(ups_lab_factory: UpsLabFactory) -> tuple[RunningLab, NutServer]:
    """Three nodes that boot on their magic packet, and a upsd + dummy-ups in the orch namespace."""
    return ups_lab_factory(3, boot_delay=0.3)


class Servers:
    """`mko serve` processes in the lab's orch namespace, all on one PostgreSQL database."""

    def __init__(self, url: str, orch: str, key: str, directory: Path) -> None:
        self.url, self.orch, self.key, self.directory = url, orch, key, directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, name: str) -> dict[str, str]:
        return os.environ | {
            "MKO_DATABASE_URL": self.url,
            "MKO_INSTANCE_NAME": name,
            "MKO_SECRET_KEY": self.key,
            "MKO_LOG_DIR": str(self.directory / f"logs-{name}"),
            "MKO_CONFIG": str(self.directory / "absent.toml"),
            "MKO_ADMIN_PASSWORD": "not-printed-admin-pw",
            "MKO_HA_CHECK_INTERVAL": "0.2",
            "MKO_HA_CHECK_TIMEOUT": "0.5",
            "MKO_HA_HEARTBEAT_INTERVAL": "0.2",
            "MKO_HA_DEAD_AFTER": "1.5",
            "MKO_UPS_POLL_INTERVAL": "0.2",
            "MKO_UPS_RELOAD_INTERVAL": "0.5",
            "MKO_RULE_WAKE_TIMEOUT": "30",
            "MKO_PROBE_INTERVAL": "0.1",
            "MKO_REACHABILITY_INTERVAL": "0",
            "MKO_SCHEDULER_ENABLED": "false",
            "MKO_NOTIFY_UPS_EVENTS": "false",
        }

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.directory / f"serve-{name}.log").open("wb")
        command = ["ip", "netns", "exec", self.orch, sys.executable, "-m", "mko", "serve"]
        process = subprocess.Popen(
            [*command, "--port", str(next(_ports))],
            env=self.env(name),
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes[name] = process
        return process

    def output(self, name: str) -> str:
        return (self.directory / f"serve-{name}.log").read_text(errors="replace")[-4000:]

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def status(factory: sessionmaker[Session], settings: Settings) -> dict[str, object]:
    with factory() as session:
        return cluster_status(session, settings)


def operations(factory: sessionmaker[Session], kind: str) -> list[Operation]:
    with factory() as session:
        found = list(session.scalars(select(Operation).where(Operation.kind == kind).order_by(Operation.id)))
        for operation in found:
            _ = operation.steps
        return found


def events(factory: sessionmaker[Session]) -> list[UpsEvent]:
    with factory() as session:
        return list(session.scalars(select(UpsEvent).order_by(UpsEvent.id)))


def test_leader_killed_mid_wake_the_other_finishes_it_once_and_acts_once_on_a_power_loss(
    ha_lab: tuple[RunningLab, NutServer], postgres: PostgresServer, tmp_path: Path
) -> None:
    running, nut = ha_lab
    url = postgres.create_database("failover")
    engine = make_engine(url)
    upgrade(engine)
    key = Fernet.generate_key().decode()
    settings = Settings(database_url=url, secret_key=key, ha_dead_after=1.5)
    factory = make_session_factory(engine)
    running.clear()
    # The last node takes a while to boot: the leader dies while the wake still waits for it.
    slow = running.nodes[-1]
    slow.power.boot_delay = 4.0
    with factory() as session:
        cluster, _ = register_lab(session, running)
        ups = create_ups(
            session,
            settings,
            UpsCreate(
                name="lab-ups", ups_name=nut.ups_name, port=nut.port, username="admin", password="secret"
            ),
        )
        wake_rule = create_rule(
            session,
            RuleCreate(
                ups_id=ups.id,
                cluster_id=cluster.id,
                power_event=PowerEvent.POWER_RESTORED,
                cluster_action=ClusterAction.WAKE_ON_LAN,
                recover_after_wake=False,
            ),
        ).id
        # Shut down after an hour on battery: the execution waits, which is all this test needs to see.
        loss_rule = create_rule(
            session,
            RuleCreate(
                ups_id=ups.id,
                cluster_id=cluster.id,
                power_event=PowerEvent.POWER_LOSS,
                cluster_action=ClusterAction.GRACEFUL_SHUTDOWN,
                action_delay=3600,
            ),
        ).id
        ups_id = ups.id
    nut.set(status="OB DISCHRG", charge=90)
    nut.wait_for("ups.status", "OB DISCHRG", timeout=10)
    servers = Servers(url, running.lab.orch, key, tmp_path)
    try:
        first = servers.start("alpha")
        wait_until(lambda: status(factory, settings)["leader"] == "alpha", 30, what="alpha leading")

        def baseline() -> bool:
            with factory() as session:
                row = session.get(UpsState, ups_id)
                return row is not None and row.status == "OB DISCHRG"

        wait_until(baseline, 10, what="alpha persisting the UPS state")
        servers.start("beta")
        wait_until(lambda: status(factory, settings)["online"] == 2, 30, what="beta online")
        assert status(factory, settings)["leader"] == "alpha"

        nut.set(status="OL CHRG", charge=90)  # mains back: alpha's rule wakes the cluster

        def mid_wake() -> bool:
            wakes = operations(factory, "wol_wake_cluster")
            started = wakes and wakes[0].status == OperationStatus.RUNNING
            return bool(started) and running.nodes[0].power.is_on and not slow.power.is_on

        wait_until(mid_wake, 15, what="the wake under way, the first node up, the last still booting")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        nut.set(status="OB DISCHRG", charge=85)  # power lost again while nobody leads
        wait_until(lambda: status(factory, settings)["leader"] == "beta", 15, what="beta leading")

        def settled() -> bool:
            wakes = operations(factory, "wol_wake_cluster")
            executions = operations(factory, RULE_OPERATION_KIND)
            done = [o for o in executions if o.status != OperationStatus.PENDING]
            return (
                len(wakes) == 1
                and wakes[0].status not in (OperationStatus.PENDING, OperationStatus.RUNNING)
                and len(executions) == 2
                and all(o.status not in (OperationStatus.RUNNING,) for o in done)
            )

        wait_until(settled, 40, what="the wake finished and the power loss handled")
        wakes = operations(factory, "wol_wake_cluster")
        executions = operations(factory, RULE_OPERATION_KIND)
        stored = events(factory)
        cluster_state = status(factory, settings)
    finally:
        servers.close()
        engine.dispose()
    print(servers.output("beta"))

    # One wake, finished by beta under the same operation, every node up and booted exactly once.
    [woken] = wakes
    assert woken.status == OperationStatus.SUCCEEDED, woken.summary
    assert woken.instance == "beta" and woken.result["resumed"]["from"] == "alpha"
    assert woken.summary.startswith("resumed after failover on alpha: 3/3 node(s) up")
    assert "resumed after failover" in [step.name for step in woken.steps]
    assert {n["state"] for n in woken.result["nodes"]} == {"up"}
    assert [node.power.boot_count for node in running.nodes] == [1, 1, 1]

    # The rule execution alpha started was taken over, not started again.
    restored_events = [e for e in stored if e.event == PowerEvent.POWER_RESTORED]
    loss_events = [e for e in stored if e.event == PowerEvent.POWER_LOSS]
    assert len(restored_events) == 1 and restored_events[0].handled_by == "alpha"
    by_rule = {o.parameters["rule_id"]: o for o in executions}
    wake_execution = by_rule[wake_rule]
    assert wake_execution.status == OperationStatus.SUCCEEDED, wake_execution.summary
    assert wake_execution.result["taken_over"]["from"] == "alpha"
    assert wake_execution.result["action_operation_id"] == woken.id

    # The power loss nobody watched happen: detected by beta from the persisted status, acted on once.
    assert len(loss_events) == 1 and loss_events[0].handled_by == "beta"
    assert loss_events[0].status_before == "OL CHRG" and loss_events[0].status_after == "OB DISCHRG"
    loss_execution = by_rule[loss_rule]
    assert loss_execution.result["event"]["id"] == loss_events[0].id
    assert loss_execution.status == OperationStatus.PENDING and loss_execution.instance == "beta"

    instances = {i["name"]: i for i in cluster_state["instances"]}  # type: ignore[index]
    assert cluster_state["leader"] == "beta"
    assert not instances["alpha"]["online"] and instances["beta"]["online"]
