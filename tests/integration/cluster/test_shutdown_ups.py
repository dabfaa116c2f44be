"""A whole power cycle through a REAL upsd: OB → graceful_shutdown → OL → wake_on_lan → recovery.

One lab (4 nodes with sshd and the MicroK8s stand-ins: lab-n1 and lab-n2 control planes, lab-n3 and
lab-n4 workers) and one upsd + dummy-ups in its orch namespace serve the module; each test gets a fresh
database, the UPS on line, every node up and Ready with MicroK8s enabled and uncordoned. The monitor
and its rule engine run in the orch namespace (:class:`support.ups.MonitorThread`): the rules' SSH sessions
and magic packets go out on the lab LAN as they would on a real one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.orm import Session

from mko.cluster.plan import last_duration
from mko.lab.harness import RunningLab
from mko.lab.microk8s import Microk8sCluster, configure_microk8s
from mko.lab.nut import NutServer
from mko.lab.provision import provision_lab
from mko.operations.kinds import RULE_OPERATION_KIND
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.rules import ClusterAction
from mko.platform.db.models.ups import PowerEvent
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule, runtime_need, set_rule_enabled
from mko.ups import outages
from support.ups import MonitorThread, UpsLabFactory, wait_until

# Its tests share the module's lab and upsd: one xdist worker runs them one after the other.
pytestmark = pytest.mark.xdist_group("shutdown_ups")

WORKERS, CONTROL_PLANES = ("lab-n3", "lab-n4"), ("lab-n1", "lab-n2")


@pytest.fixture(scope="module")
def ups_lab(ups_lab_factory: UpsLabFactory) -> tuple[RunningLab, NutServer]:
    """A 4-node lab with sshd per node and a real upsd + dummy-ups inside its orch namespace."""
    return ups_lab_factory(4, ssh=True, boot_delay=0.2)


@dataclass
class Rig:
    lab: RunningLab
    nut: NutServer
    settings: Settings
    cluster: Microk8sCluster
    shutdown_rule: int
    wake_rule: int

    def monitor(self) -> MonitorThread:
        return MonitorThread(self.settings, self.lab.lab.orch)

    def calls(self) -> list[tuple[str, str]]:
        """Every stand-in call of every node, oldest first: (hostname, "command args…")."""
        entries = []
        for node in self.lab.nodes:
            assert node.system is not None
            for call in node.system.calls():
                if call["cmd"] != "<boot>":
                    entries.append((call["t"], node.hostname, " ".join([call["cmd"], *call["argv"]])))
        return [(host, command) for _, host, command in sorted(entries)]

    def outages(self) -> list[dict[str, Any]]:
        """Every outage of the lab's database, oldest first, as people see them."""
        engine = make_engine(self.settings.database_url)
        try:
            with make_session_factory(engine)() as session:
                return [outages.outage_doc(session, o) for o in reversed(outages.list_outages(session))]
        finally:
            engine.dispose()

    def state(self) -> dict[str, tuple[bool, bool, bool, bool]]:
        """Per node: (powered, enabled, Ready, cordoned)."""
        return {
            h: (n["powered"], n["enabled"], n["ready"], n["cordoned"])
            for h, n in self.cluster.nodes().items()
        }


@pytest.fixture
def rig(ups_lab: tuple[RunningLab, NutServer], settings: Settings, session: Session) -> Rig:
    running, nut = ups_lab
    nut.start_driver()
    nut.set(status="OL", charge=100)
    nut.wait_for("ups.status", "OL", timeout=10)
    running.clear()
    cluster = configure_microk8s(running, control_planes=2)
    for node in running.nodes:
        assert node.system is not None
        cluster.set_node(node.hostname, enabled=True, cordoned=False)
        (node.system.state / "calls.log").write_text("")
    running.power_on_all()
    wait_until(lambda: all(n["ready"] for n in cluster.nodes().values()), 5, what="every node Ready")
    made = provision_lab(session, settings, running, nut, control_planes=2)  # what `mko lab up` registers
    fast = settings.model_copy(
        update={
            "ups_poll_interval": 0.2,
            "ups_reload_interval": 0.5,
            "rule_wake_timeout": 10.0,
            "probe_interval": 0.1,
            "recovery_timeout": 30.0,
        }
    )
    return Rig(running, nut, fast, cluster, made.shutdown_rule_id, made.wake_rule_id)


def _finished(mon: MonitorThread, kind: str) -> Operation | None:
    found = mon.operations(kind)
    if found and found[-1].status not in (OperationStatus.PENDING, OperationStatus.RUNNING):
        return found[-1]
    return None


def _rule_operations(mon: MonitorThread, count: int) -> list[Operation]:
    def settled() -> list[Operation] | None:
        found = mon.operations(RULE_OPERATION_KIND)
        done = all(op.status not in (OperationStatus.PENDING, OperationStatus.RUNNING) for op in found)
        return found if len(found) == count and done else None

    return wait_until(settled, 15, what=f"{count} rule execution(s) settled")


def test_ob_shuts_the_cluster_down_in_order_and_ol_wakes_and_recovers_it(rig: Rig) -> None:
    boots = {node.hostname: node.power.boot_count for node in rig.lab.nodes}
    with rig.monitor() as mon:
        rig.nut.set(status="OB DISCHRG", charge=80)
        shutdown = wait_until(lambda: _finished(mon, "cluster_shutdown"), 20, what="the shutdown")
        wait_until(lambda: not any(node.power.is_on for node in rig.lab.nodes), 5, what="every node off")
        assert all(state == (False, False, False, h != "lab-n1") for h, state in rig.state().items())
        rig.nut.set(status="OL CHRG")
        recovery = wait_until(lambda: _finished(mon, "cluster_recover"), 30, what="the recovery")
        down, up = _rule_operations(mon, 2)
        [wake] = mon.operations("wol_wake_cluster")
    assert shutdown.status == OperationStatus.SUCCEEDED, shutdown.summary
    assert (shutdown.actor, shutdown.source) == (f"rule:{rig.shutdown_rule}", "ups:lab-ups")
    powered_off = [host for host, command in rig.calls() if command == "systemctl poweroff"]
    assert sorted(powered_off[:2]) == list(WORKERS) and powered_off[2:] == ["lab-n2", "lab-n1"]
    assert (down.status, down.result["action_operation_id"]) == (OperationStatus.SUCCEEDED, shutdown.id)
    # Power back: magic packets boot every node, then MicroK8s is started and every node checked Ready.
    assert wake.status == OperationStatus.SUCCEEDED and {n["state"] for n in wake.result["nodes"]} == {"up"}
    assert recovery.status == OperationStatus.SUCCEEDED, recovery.summary
    assert recovery.summary == "4/4 started, 4/4 Ready, 3 uncordoned"
    assert recovery.actor == f"rule:{rig.wake_rule}" and recovery.started_at >= wake.finished_at
    assert up.status == OperationStatus.SUCCEEDED, up.summary
    assert (up.result["action_operation_id"], up.result["recovery_operation_id"]) == (wake.id, recovery.id)
    assert all(node.power.boot_count == boots[node.hostname] + 1 for node in rig.lab.nodes)
    assert rig.state() == {h: (True, True, True, False) for h in (*CONTROL_PLANES, *WORKERS)}
    # The outage: opened before the first step with the four nodes up, each power-off added as it was
    # confirmed, closed by the restore.
    [outage] = rig.outages()
    assert (outage["phase"], outage["open"], outage["event"]) == ("restored", False, "power_loss")
    assert sorted(outage["nodes_up"]) == sorted(outage["nodes_off"]) == [*CONTROL_PLANES, *WORKERS]
    assert (outage["shutdown_operation_id"], outage["restore_operation_id"]) == (shutdown.id, up.id)
    assert up.result["outage_id"] == outage["id"]


def test_power_returning_mid_shutdown_stops_it_at_a_safe_point_then_wakes_and_recovers(rig: Rig) -> None:
    # lab-n2's `microk8s stop` takes 3 s: power returns while a control plane is stopping.
    rig.cluster.update(delays={"stop": {"lab-n2": 3.0}})
    boots = {node.hostname: node.power.boot_count for node in rig.lab.nodes}
    system = rig.lab.node("n2").system
    assert system is not None
    with rig.monitor() as mon:
        rig.nut.set(status="OB DISCHRG", charge=60)
        wait_until(
            lambda: any(c["argv"] == ["stop"] for c in system.calls("microk8s")), 20, what="lab-n2 stopping"
        )
        rig.nut.set(status="OL CHRG")
        recovery = wait_until(lambda: _finished(mon, "cluster_recover"), 30, what="the recovery")
        down, up = _rule_operations(mon, 2)
        [shutdown] = mon.operations("cluster_shutdown")
        [wake] = mon.operations("wol_wake_cluster")
    # The stop in progress finished (never a half-stopped control plane); nothing after it started.
    steps = {step.name: step for step in shutdown.steps}
    assert (steps["stop lab-n2"].status, steps["stop lab-n2"].message) == (
        OperationStatus.SUCCEEDED,
        "Stopped.",
    )
    assert shutdown.status == OperationStatus.CANCELLED
    assert shutdown.result["skipped"] == ["poweroff lab-n2", "stop lab-n1", "poweroff lab-n1"]
    superseded = f"superseded by rule {rig.wake_rule} (wake_on_lan on power_restored)"
    assert steps["stop early"].message.startswith(f"{superseded}; not started: poweroff lab-n2, stop lab-n1")
    assert down.status == OperationStatus.CANCELLED and down.summary.startswith(
        f"graceful_shutdown: {superseded}"
    )
    calls = rig.calls()
    assert ("lab-n2", "systemctl poweroff") not in calls and ("lab-n1", "microk8s stop") not in calls
    # The rule's shutdown ran the preflight beside its first steps: on lab-n2 it only read Wake-on.
    preflight_reads = [("lab-n2", "ethtool veth0")]
    assert [c for c in calls if c in preflight_reads] == preflight_reads
    assert [c for c in calls if c[0] == "lab-n2" and c not in preflight_reads] == [
        ("lab-n2", "microk8s stop"),
        ("lab-n2", "microk8s start"),
    ]
    # `mko lab up`'s nodes have graceful node shutdown configured: nothing to fix.
    assert (steps["preflight"].status, steps["preflight"].message) == (
        OperationStatus.SUCCEEDED,
        "4 node(s): 12 pass, 0 warn, 0 fail, 8 n/a",
    )
    # Then the wake of the workers that went off (the control planes still answer: left as they are)
    # and the recovery: the cluster is up.
    assert wake.started_at >= shutdown.finished_at
    assert {n["hostname"]: n["state"] for n in wake.result["nodes"]} == dict.fromkeys(WORKERS, "up")
    left = {step.name: step.message for step in wake.steps if step.name.startswith("leave ")}
    assert left == dict.fromkeys(("leave lab-n1", "leave lab-n2"), "answering: left as it is")
    rebooted = {n.hostname: n.power.boot_count - boots[n.hostname] for n in rig.lab.nodes}
    assert rebooted == {"lab-n1": 0, "lab-n2": 0, "lab-n3": 1, "lab-n4": 1}
    assert recovery.status == OperationStatus.SUCCEEDED, recovery.summary
    assert sorted(recovery.result["uncordoned"]) == ["lab-n2", "lab-n3", "lab-n4"]
    assert up.status == OperationStatus.SUCCEEDED, up.summary
    assert rig.state() == {h: (True, True, True, False) for h in (*CONTROL_PLANES, *WORKERS)}


def test_runtime_low_shuts_down_when_the_battery_will_not_last_the_last_measured_shutdown(
    rig: Rig, session: Session
) -> None:
    # Instead of "after N seconds on battery": when the runtime upsd reports drops below what this
    # cluster's shutdown takes (never measured yet: 300 s × 1.5 + 60 s = 510 s with the defaults).
    set_rule_enabled(session, rig.shutdown_rule, False)
    made = create_rule(
        session,
        RuleCreate(
            ups_id=1,
            cluster_id=1,
            power_event=PowerEvent.RUNTIME_LOW,
            cluster_action=ClusterAction.GRACEFUL_SHUTDOWN,
        ),
    )
    with rig.monitor() as mon:
        rig.nut.set(status="OB DISCHRG", charge=90, battery_runtime="900")
        wait_until(lambda: [e.event.value for e in mon.events()] == ["power_loss"], 10, what="power_loss")
        time.sleep(1)  # several polls with 900 s left: enough for the shutdown
        assert mon.operations("cluster_shutdown") == []
        rig.nut.set(battery_runtime="500")
        shutdown = wait_until(lambda: _finished(mon, "cluster_shutdown"), 30, what="the shutdown")
        low = next(e for e in mon.events() if e.event.value == "runtime_low")
        with mon.factory() as fresh:
            measured = last_duration(fresh, 1)
    assert low.detail == {"clusters": [1], "needs": {"1": 510.0}, "runtime": 500.0}
    assert low.message == "battery runtime 500 s will not last the shutdown: cluster 1 needs 510 s"
    assert shutdown.status == OperationStatus.SUCCEEDED and shutdown.actor == f"rule:{made.id}"
    # The next cut is judged by this shutdown's own duration.
    assert measured is not None and 0 < measured < 30
    assert runtime_need(rig.settings, measured) == measured * 1.5 + 60
