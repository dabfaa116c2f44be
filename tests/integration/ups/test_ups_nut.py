"""UPS monitoring and power rules against a REAL upsd + dummy-ups, with magic packets in the lab.

One lab and one NUT server serve the whole module (building them costs ~3 s); each test gets a fresh
database, the UPS back on line at 100 %, and every lab node switched off. upsd runs inside the lab's
``orch`` namespace; the monitor runs there too (:class:`support.ups.MonitorThread`), so its NUT connection
goes to that namespace's 127.0.0.1 and its magic packets out on the lab LAN, never onto the host's.
The UPS is driven by rewriting dummy-ups's .dev file (upsd serves the change at the driver's next 1 s
tick); the monitor polls every 0.2 s here to keep the tests short (the default 1 s is in bench/).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.app import create_app
from mko.cli.root import app as cli_app
from mko.inventory.nodes import update_node
from mko.inventory.schemas import WolConfigure
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import enter_netns
from mko.lab.nut import NutServer
from mko.operations.kinds import RULE_OPERATION_KIND
from mko.platform.db.models.operations import OperationStatus
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import PowerEvent
from mko.platform.settings import Settings
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule, get_rule, list_rules
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups
from support.auth import admin_headers
from support.ups import MonitorThread, UpsLabFactory, event_names, wait_until

# Its tests share the module's lab and upsd: one xdist worker runs them one after the other.
pytestmark = pytest.mark.xdist_group("ups_nut")

ROOT = Path(__file__).resolve().parents[3]
SEED_CREATE_RULE = [
    "ups",
    "create-rule",
    "--ups-id",
    "1",
    "--cluster-id",
    "1",
    "--power-event",
    "power_restored",
    "--cluster-action",
    "wake_on_lan",
    "--name",
    "Wake cluster after power restoration",
]
FLAP_SECONDS = 30
FLAP_PERIOD = 2.0


@dataclass
class Rig:
    """A test's view of the shared lab and upsd, plus its own database rows."""

    lab: RunningLab
    nut: NutServer
    settings: Settings
    cluster_id: int
    node_ids: list[int]
    ups_id: int

    @property
    def orch(self) -> str:
        return self.lab.lab.orch

    def monitor(self) -> MonitorThread:
        return MonitorThread(self.settings, self.orch)

    def packets(self) -> int:
        return sum(len(node.recorder.packets_for(node.mac)) for node in self.lab.nodes)

    def every_node_got_a_packet(self, timeout: float = 5) -> bool:
        return all(node.recorder.wait_for(1, timeout=timeout, mac=node.mac) for node in self.lab.nodes)


@pytest.fixture(scope="module")
def ups_lab(ups_lab_factory: UpsLabFactory) -> tuple[RunningLab, NutServer]:
    """A 3-node lab and a real upsd + dummy-ups listening inside its orch namespace."""
    return ups_lab_factory(3)


@pytest.fixture
def rig(ups_lab: tuple[RunningLab, NutServer], settings: Settings, session: Session) -> Rig:
    """The UPS on line at 100 %, nodes off, the lab cluster and the UPS registered (both id 1)."""
    running, nut = ups_lab
    nut.start_driver()
    nut.set(status="OL", charge=100)
    nut.wait_for("ups.status", "OL", timeout=10)
    nut.wait_for("battery.charge", "100", timeout=5)
    running.clear()
    cluster, nodes = register_lab(session, running)
    ups = create_ups(
        session,
        settings,
        UpsCreate(name="lab-ups", ups_name=nut.ups_name, port=nut.port, username="admin", password="secret"),
    )
    fast = settings.model_copy(
        update={"ups_poll_interval": 0.2, "ups_reload_interval": 0.5, "rule_wake_timeout": 5.0}
    )
    return Rig(running, nut, fast, cluster.id, [n.id for n in nodes], ups.id)


def _rule(session: Session, rig: Rig, event: PowerEvent, **fields: object) -> PowerRule:
    # This lab's nodes run no sshd, so the wake is not followed by the cluster recovery here
    # (tests/integration/cluster/test_shutdown_ups.py runs the whole cycle with it).
    if event == PowerEvent.POWER_RESTORED:
        fields.setdefault("stable_for", 0)
    data = RuleCreate(
        ups_id=rig.ups_id,
        cluster_id=rig.cluster_id,
        power_event=event,
        cluster_action=ClusterAction.WAKE_ON_LAN,
        recover_after_wake=False,
        **fields,  # type: ignore[arg-type]
    )
    return create_rule(session, data)


def _rule_state(rig: Rig, mon: MonitorThread, rule_id: int) -> PowerRule:
    with mon.factory() as session:
        return get_rule(session, rule_id)


def _settled(mon: MonitorThread) -> bool:
    """No rule execution is waiting or running."""
    return all(
        op.status not in (OperationStatus.PENDING, OperationStatus.RUNNING)
        for op in mon.operations(RULE_OPERATION_KIND)
    )


def test_seed_rule_created_verbatim_wakes_every_node_after_ol_ob_ol(rig: Rig, session: Session) -> None:
    # The seed guide's command, word for word, in a real process.
    seed = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *SEED_CREATE_RULE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert seed.returncode == 0, seed.stderr
    assert (rig.ups_id, rig.cluster_id) == (1, 1)
    # The seed's rule recovers the cluster after the wake by default; this lab's nodes run no sshd, so
    # only the wake is exercised here (test_shutdown_ups.py runs the recovery too).
    [created] = list_rules(session)
    assert created.recover_after_wake is True
    assert (created.stable_for, created.min_charge) == (10, None)  # the documented restore defaults
    created.recover_after_wake = False
    created.stable_for = 0  # this test measures the wake itself, not the wait for mains to hold
    session.commit()
    with rig.monitor() as mon:
        [rule] = _rules(mon)
        assert (rule.name, rule.power_event, rule.cluster_action, rule.enabled) == (
            "Wake cluster after power restoration",
            PowerEvent.POWER_RESTORED,
            ClusterAction.WAKE_ON_LAN,
            True,
        )
        rig.nut.set(status="OB DISCHRG", charge=90)
        wait_until(lambda: event_names(mon.events()) == ["power_loss"], 5, what="power_loss")
        time.sleep(1.0)  # on battery for several polls: no second event, no action
        assert event_names(mon.events()) == ["power_loss"]
        assert rig.packets() == 0
        rig.nut.set(status="OL CHRG")
        wait_until(lambda: "power_restored" in event_names(mon.events()), 5, what="power_restored")
        assert rig.every_node_got_a_packet()
        wait_until(lambda: _settled(mon) and mon.operations(RULE_OPERATION_KIND), 10, what="the rule's wake")
        time.sleep(0.4)  # more polls on line: still exactly one event each
        events = mon.events()
        rule_ops = mon.operations(RULE_OPERATION_KIND)
        wakes = mon.operations("wol_wake_cluster")
        rule = _rule_state(rig, mon, rule.id)
    loss, restored = events
    assert event_names(events) == ["power_loss", "power_restored"]
    assert (loss.status_before, loss.status_after) == ("OL", "OB DISCHRG")
    assert (restored.status_before, restored.status_after) == ("OB DISCHRG", "OL CHRG")
    [operation] = rule_ops
    assert operation.status == OperationStatus.SUCCEEDED
    assert (operation.actor, operation.source) == (f"rule:{rule.id}", "ups:lab-ups")
    assert operation.result["event"]["id"] == restored.id
    assert operation.result["event"]["event"] == "power_restored"
    [wake_op] = wakes
    assert wake_op.actor == f"rule:{rule.id}" and wake_op.status == OperationStatus.SUCCEEDED
    assert operation.result["action_operation_id"] == wake_op.id
    assert {n["state"] for n in wake_op.result["nodes"]} == {"up"}
    assert wake_op.parameters["wait"] is True
    assert (rule.execution_count, rule.success_count, rule.failure_count) == (1, 1, 0)
    assert rule.last_triggered_at == restored.occurred_at


def _rules(mon: MonitorThread) -> list[PowerRule]:
    with mon.factory() as session:
        return list_rules(session)


def test_power_loss_rule_with_delay_5_is_cancelled_when_mains_returns_in_time(
    rig: Rig, cli: CliRunner
) -> None:
    created = cli.invoke(
        cli_app,
        [
            "ups",
            "create-rule",
            "--ups-id",
            str(rig.ups_id),
            "--cluster-id",
            str(rig.cluster_id),
            "--power-event",
            "power_loss",
            "--cluster-action",
            "wake_on_lan",
            "--delay",
            "5",
            "--json",
        ],
    )
    assert created.exit_code == 0, created.stderr
    rule_id = json.loads(created.stdout)["id"]
    with rig.monitor() as mon:
        rig.nut.set(status="OB")
        [loss] = wait_until(mon.events, 5, what="power_loss")
        seen_loss = time.monotonic()
        [waiting] = wait_until(lambda: mon.operations(RULE_OPERATION_KIND), 2, what="the delayed execution")
        assert waiting.status == OperationStatus.PENDING
        assert waiting.steps[0].name == "wait 5s"
        time.sleep(1.0)
        rig.nut.set(status="OL")
        restored = wait_until(
            lambda: next((e for e in mon.events() if e.event == PowerEvent.POWER_RESTORED), None), 5
        )
        assert restored.occurred_at - loss.occurred_at < timedelta(seconds=5)
        [cancelled] = wait_until(
            lambda: [o for o in mon.operations(RULE_OPERATION_KIND) if o.status == OperationStatus.CANCELLED],
            2,
            what="the cancellation",
        )
        # Past the moment the action would have fired: nothing went out.
        time.sleep(max(0.0, seen_loss + 5.5 - time.monotonic()))
        rule = _rule_state(rig, mon, rule_id)
        wakes = mon.operations("wol_wake_cluster")
    assert rig.packets() == 0
    assert wakes == []
    assert cancelled.id == waiting.id
    assert f"power_restored (event {restored.id})" in cancelled.summary
    assert (rule.execution_count, rule.success_count, rule.failure_count) == (0, 0, 0)
    assert rule.last_triggered_at == loss.occurred_at


def test_killed_driver_gives_comm_lost_no_action_and_no_false_power_restored(
    rig: Rig, session: Session
) -> None:
    rule = _rule(session, rig, PowerEvent.POWER_RESTORED)
    with rig.monitor() as mon:
        rig.nut.set(status="OB DISCHRG", charge=80)
        wait_until(lambda: event_names(mon.events()) == ["power_loss"], 5, what="power_loss")
        rig.nut.kill_driver()
        wait_until(lambda: "comm_lost" in event_names(mon.events()), 5, what="comm_lost")
        snapshot = mon.call(lambda: mon.monitor.snapshot(rig.ups_id) if mon.monitor else None)
        assert snapshot is not None
        assert snapshot["reachable"] is False and snapshot["comm"] == "lost"
        assert "DRIVER-NOT-CONNECTED" in snapshot["error"]
        assert snapshot["status"] == "OB DISCHRG"  # the last known reading stays visible
        # The driver comes back, the UPS still on battery: upsd says WAIT, then OB again.
        rig.nut.start_driver()
        wait_until(lambda: "comm_restored" in event_names(mon.events()), 15, what="comm_restored")
        time.sleep(1.0)
        assert event_names(mon.events()) == ["power_loss", "comm_lost", "comm_restored"]
        assert rig.packets() == 0
        assert mon.operations(RULE_OPERATION_KIND) == []
        comm_lost = mon.events()[1]
        assert comm_lost.status_before == "OB DISCHRG" and comm_lost.status_after is None
        # The rule was live all along: real mains return fires it.
        rig.nut.set(status="OL")
        wait_until(lambda: "power_restored" in event_names(mon.events()), 5, what="power_restored")
        assert rig.every_node_got_a_packet()
        wait_until(lambda: _settled(mon) and mon.operations(RULE_OPERATION_KIND), 10, what="the wake")
        state = _rule_state(rig, mon, rule.id)
    assert event_names(mon.events()) == ["power_loss", "comm_lost", "comm_restored", "power_restored"]
    assert state.execution_count == 1


def test_flapping_ob_ol_every_2s_for_30s_gives_no_duplicate_or_overlapping_actions(
    rig: Rig, session: Session
) -> None:
    # One node never answers its probe, so each wake runs its whole 5 s timeout: longer than the 4 s
    # between two power_restored events. Overlaps would happen if the engine allowed them.
    update_node(session, rig.node_ids[2], WolConfigure(probe_port=2299))
    rule = _rule(session, rig, PowerEvent.POWER_RESTORED)
    writes = int(FLAP_SECONDS / FLAP_PERIOD)
    with rig.monitor() as mon:
        for index in range(writes):
            rig.nut.set(status="OB DISCHRG" if index % 2 == 0 else "OL CHRG")
            time.sleep(FLAP_PERIOD)
        if writes % 2:
            rig.nut.set(status="OL CHRG")
        expected = ["power_loss", "power_restored"] * ((writes + 1) // 2)
        wait_until(lambda: event_names(mon.events()) == expected, 5, what=f"{len(expected)} events")
        wait_until(
            lambda: _settled(mon) and len(mon.operations(RULE_OPERATION_KIND)) == len(expected) // 2, 12
        )
        events = mon.events()
        rule_ops = mon.operations(RULE_OPERATION_KIND)
        wakes = mon.operations("wol_wake_cluster")
        state = _rule_state(rig, mon, rule.id)
    restored_ids = [e.id for e in events if e.event == PowerEvent.POWER_RESTORED]
    # Once per event: one record per power_restored, each for a different event.
    assert sorted(op.result["event"]["id"] for op in rule_ops) == restored_ids
    executed = [op for op in rule_ops if op.status != OperationStatus.CANCELLED]
    skipped = [op for op in rule_ops if op.status == OperationStatus.CANCELLED]
    assert skipped, "the scenario never put a power_restored on top of a running wake"
    assert all("skipped: this rule is still running" in op.summary for op in skipped)
    assert len(wakes) == len(executed) == state.execution_count
    # Never two actions on the cluster at once: execution and wake intervals are disjoint.
    for spans in (executed, wakes):
        ordered = sorted((op.started_at, op.finished_at) for op in spans)
        for (_, end), (start, _) in itertools.pairwise(ordered):
            assert end is not None and start is not None and end <= start
    assert state.failure_count == state.execution_count  # the silent node makes every wake partial
    assert {op.status for op in executed} == {OperationStatus.PARTIAL}


def test_charge_falling_through_a_threshold_fires_low_battery_once_and_restart_replays_nothing(
    rig: Rig, session: Session
) -> None:
    rule = _rule(session, rig, PowerEvent.LOW_BATTERY, battery_threshold=50)
    with rig.monitor() as mon:
        rig.nut.set(status="OB DISCHRG", charge=100)
        wait_until(lambda: event_names(mon.events()) == ["power_loss"], 5, what="power_loss")
        for charge in (60, 49, 50, 45):  # 49 → 50 → 45: jitter around the threshold
            rig.nut.set(charge=charge)
            rig.nut.wait_for("battery.charge", str(charge), timeout=3)
            time.sleep(0.4)  # two polls at least
        wait_until(lambda: _settled(mon) and mon.operations(RULE_OPERATION_KIND), 10, what="the wake")
        events = mon.events()
    assert event_names(events) == ["power_loss", "low_battery"]
    low = events[1]
    assert low.detail["thresholds"] == [50] and low.battery_charge == 49
    assert rig.every_node_got_a_packet(timeout=1)
    # A restarted monitor takes the UPS as it is (on battery, below 50 %): nothing is replayed.
    with rig.monitor() as mon:
        time.sleep(0.6)
        rig.nut.set(charge=40)
        rig.nut.wait_for("battery.charge", "40", timeout=3)
        time.sleep(0.4)
        assert event_names(mon.events()) == ["power_loss", "low_battery"]
        rig.nut.set(status="OL CHRG", charge=41)
        wait_until(lambda: "power_restored" in event_names(mon.events()), 5, what="power_restored")
        state = _rule_state(rig, mon, rule.id)
    assert state.execution_count == 1


def test_serve_runs_the_monitor_status_and_events_over_api_and_cli(rig: Rig, cli: CliRunner) -> None:
    with enter_netns(rig.orch):
        app = create_app(rig.settings)
        with TestClient(
            app, headers=admin_headers(rig.settings.database_url)
        ) as client:  # the lifespan starts the monitor inside the orch namespace
            assert client.get("/api/ups/monitor").json()["running"] is True

            def status() -> dict[str, object]:
                body: dict[str, object] = client.get(f"/api/ups/{rig.ups_id}/status").json()
                return body

            on_line = wait_until(lambda: (s := status())["source"] == "monitor" and s, 5, what="status")
            rig.nut.set(status="OB DISCHRG", charge=80)
            wait_until(
                lambda: [e["event"] for e in client.get("/api/ups/events").json()] == ["power_loss"],
                5,
                what="power_loss over the API",
            )
            on_battery = wait_until(lambda: (s := status())["battery_charge"] == 80 and s, 3)
        app.state.engine.dispose()
    assert on_line["reachable"] is True and on_line["status_words"] == ["on line"]
    assert (on_line["battery_charge"], on_line["battery_runtime"], on_line["ups_load"]) == (100, 1800, 25)
    assert on_line["input_voltage"] == 230 and on_line["last_update"]
    assert on_battery["on_battery"] is True
    assert on_battery["status_words"] == ["on battery", "discharging"]
    # The CLI reads upsd itself; run it where upsd is reachable (the orch namespace).
    with enter_netns(rig.orch):
        direct = cli.invoke(cli_app, ["ups", "status", str(rig.ups_id), "--json"])
    assert direct.exit_code == 0, direct.stderr
    read = json.loads(direct.stdout)
    assert (read["reachable"], read["status"], read["battery_charge"]) == (True, "OB DISCHRG", 80)
    assert read["source"] == "direct" and "secret" not in direct.stdout
    events = cli.invoke(cli_app, ["ups", "events", "--json"])
    assert events.exit_code == 0
    [stored] = json.loads(events.stdout)
    assert (stored["event"], stored["status_before"], stored["status_after"]) == (
        "power_loss",
        "OL",
        "OB DISCHRG",
    )
