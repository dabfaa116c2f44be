"""Schedules, discovery and /metrics against the virtual lab: real packets, real ARP, real probes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from mko.app import create_app
from mko.cli.root import app as cli_app
from mko.inventory import discovery
from mko.inventory.clusters import create_cluster
from mko.inventory.discovery import DiscoverRequest
from mko.inventory.nodes import create_node, delete_node, update_node
from mko.inventory.schemas import ClusterCreate, NodeCreate, NodeUpdate
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import enter_netns
from mko.lab.nut import NutServer
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import PowerEvent
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule
from mko.schedules.scheduler import Scheduler
from mko.schedules.schemas import ScheduleCreate
from mko.schedules.service import create_schedule
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups
from support.auth import admin_headers

BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    """A clock the test moves; ``sleep`` advances it instead of waiting, and never past ``stop``."""

    def __init__(self, start: datetime, stop: datetime) -> None:
        self.now, self.stop = start.astimezone(UTC), stop
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.now >= self.stop:
            await asyncio.Event().wait()
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


def test_a_schedule_fires_at_its_instant_and_wakes_only_the_lab_nodes_that_are_down(
    settings: Settings, session: Session, lab: RunningLab
) -> None:
    cluster, nodes = register_lab(session, lab)
    already_up = lab.nodes[0]
    already_up.power.power_on()
    assert already_up.power.wait_booted(5)
    start, instant = (
        datetime(2026, 5, 4, 7, 29, 10, tzinfo=BERLIN),
        datetime(2026, 5, 4, 7, 30, tzinfo=BERLIN),
    )
    schedule = create_schedule(
        session,
        settings,
        ScheduleCreate(
            name="weekday morning",
            cron="30 7 * * 1-5",
            timezone="Europe/Berlin",
            cluster_id=cluster.id,
            wait=True,
            timeout=10,
            delay=0.2,
        ),
        now=start,
    )
    clock = Clock(start, stop=instant)
    engine = make_engine(settings.database_url)
    scheduler = Scheduler(make_session_factory(engine), settings, clock=clock, sleep=clock.sleep)

    async def run_until_fired() -> tuple[datetime, Operation]:
        loop = asyncio.create_task(scheduler.run())
        try:
            while not scheduler.tasks:
                await asyncio.sleep(0.001)
            fired_at = clock.now
            [task] = scheduler.tasks
            return fired_at, await task
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    try:
        with enter_netns(lab.lab.orch):
            fired_at, operation = asyncio.run(run_until_fired())
    finally:
        engine.dispose()
    assert fired_at == instant and clock.sleeps == [15.0, 15.0, 15.0, 5.0]
    assert operation.parameters["scheduled_for"] == instant.astimezone(UTC).isoformat()
    assert operation.status == OperationStatus.SUCCEEDED, operation.summary
    assert operation.actor == f"schedule:{schedule.id}" and operation.target_id == cluster.id
    assert operation.summary.startswith("1 already up; woke 2: 2/2 node(s) up")
    # The node that was up got no packet; the two others got theirs and booted.
    assert already_up.recorder.packets_for(already_up.mac) == []
    for running in lab.nodes[1:]:
        assert running.recorder.packets_for(running.mac), running.name
        assert running.power.is_on
    wake = session.get_one(Operation, operation.result["wake_operation_id"])
    assert wake.actor == f"schedule:{schedule.id}" and wake.status == OperationStatus.SUCCEEDED
    assert sorted(step.node_id or 0 for step in wake.steps) == [nodes[1].id, nodes[2].id]


def test_discovery_finds_exactly_the_lab_nodes_with_their_macs_and_marks_known_ones(
    settings: Settings, session: Session, lab: RunningLab, cli: CliRunner
) -> None:
    cluster, nodes = register_lab(session, lab)
    # n1 is known by IP and MAC; n2 only by its MAC (its inventory address is stale); n3 is not known.
    update_node(session, nodes[1].id, NodeUpdate(ip_address="10.99.0.12"))
    delete_node(session, nodes[2].id)
    lab.nodes[2].power.power_on()  # n3 is up: its port 2222 is open
    assert lab.nodes[2].power.wait_booted(5)
    # A probe answers at once on the lab LAN; the longer timeout only keeps a starved event loop (four
    # test workers on two cores) from missing an answer, its own address's refusal included.
    patient = settings.model_copy(update={"discovery_timeout": 10.0})
    with enter_netns(lab.lab.orch):
        result = asyncio.run(
            discovery.discover(
                sessionmaker(session.get_bind(), expire_on_commit=False),
                patient,
                DiscoverRequest(cidr="10.213.0.0/24", ports=[22, 2222]),
            )
        )
    found = {host.ip: host for host in result.hosts}
    assert set(found) == {node.ip for node in lab.nodes}
    assert result.addresses == 254 and result.skipped_local == [lab.lab.orch_ip]
    for running in lab.nodes:
        host = found[running.ip]
        assert host.mac == running.mac and host.prefix_len == 24 and "tcp" in host.seen_by
    n1, n2, n3 = (found[running.ip] for running in lab.nodes)
    assert (n1.node_id, n1.known_by) == (nodes[0].id, ["ip", "mac"])
    assert (n2.node_id, n2.known_by) == (nodes[1].id, ["mac"])
    assert (n3.node_id, n3.open_ports, n1.open_ports) == (None, [2222], [])
    # The CLI adds the new host as a node of the cluster, with its MAC, ready to wake.
    with enter_netns(lab.lab.orch):
        added = cli.invoke(
            cli_app,
            [
                "discover",
                "10.213.0.0/24",
                "--ports",
                "2222",
                "--icmp",
                "--add",
                "--cluster",
                str(cluster.id),
                "--json",
            ],
        )
    assert added.exit_code == 0, added.stderr
    report = json.loads(added.stdout)
    [new] = [h for h in report["hosts"] if h["added_node_id"] is not None]
    assert new["ip"] == lab.nodes[2].ip and {"tcp", "icmp", "arp"} <= set(new["seen_by"])
    session.expire_all()
    node = session.get_one(Node, new["added_node_id"])
    assert (node.ip_address, node.wol_mac_address, node.wol_enabled) == (
        lab.nodes[2].ip,
        lab.nodes[2].mac,
        True,
    )
    assert (node.cluster_id, node.power_params["wol_prefix_len"], node.probe_port) == (cluster.id, 24, 2222)
    operation = session.get_one(Operation, report["operation_id"])
    assert operation.kind == "discover_add" and operation.status == OperationStatus.SUCCEEDED
    too_big = cli.invoke(cli_app, ["discover", "10.0.0.0/16"])
    assert too_big.exit_code == 2 and "more than a /22" in too_big.stderr


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_metrics_after_a_rule_wake_driven_by_a_real_upsd(
    settings: Settings, session: Session, lab: RunningLab, tmp_path: Path
) -> None:
    cluster, _ = register_lab(session, lab)
    other = create_cluster(session, ClusterCreate(name="other"))
    create_node(session, NodeCreate(hostname="spare", ip_address="10.213.0.99", cluster_id=other.id))
    nut = NutServer.start(tmp_path / "nut", netns=lab.lab.orch)
    try:
        ups = create_ups(
            session,
            settings,
            UpsCreate(
                name="lab-ups", ups_name=nut.ups_name, port=nut.port, username="admin", password="secret"
            ),
        )
        rule = create_rule(
            session,
            RuleCreate(
                ups_id=ups.id,
                cluster_id=cluster.id,
                power_event=PowerEvent.POWER_RESTORED,
                cluster_action=ClusterAction.WAKE_ON_LAN,
                name="wake after power returns",
                recover_after_wake=False,  # no sshd on these nodes; test_shutdown_ups.py covers recovery
            ),
        )
        fast = settings.model_copy(
            update={"ups_poll_interval": 0.2, "ups_reload_interval": 0.5, "rule_wake_timeout": 10.0}
        )
        with enter_netns(lab.lab.orch):  # the server's loop, its NUT link and its packets live in the lab
            app = create_app(fast)
            client = TestClient(app, headers=admin_headers(fast.database_url))
            client.__enter__()
        try:
            nut.set(status="OB DISCHRG", charge=87, **{"battery.runtime": "1500"})
            _wait(lambda: "OB" in client.get("/metrics").text, 10, "the monitor to see the UPS on battery")
            on_battery = _samples(client.get("/metrics").text)
            nut.set(status="OL CHRG")
            _wait(lambda: all(n.power.is_on for n in lab.nodes), 15, "the rule's wake")
            _wait(lambda: _rule_done(settings, rule.id), 15, "the rule execution to finish")
            with enter_netns(lab.lab.orch):
                asyncio.run(app.state.refresher.refresh())
            samples = _samples(client.get("/metrics").text)
        finally:
            client.__exit__(None, None, None)
            app.state.engine.dispose()
    finally:
        nut.stop()

    def value(found: dict[Any, float], name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    ups_labels = {"ups": "lab-ups"}
    assert value(on_battery, "mko_ups_status", flag="OB", **ups_labels) == 1
    assert value(on_battery, "mko_ups_on_battery", **ups_labels) == 1
    assert value(on_battery, "mko_ups_battery_charge_percent", **ups_labels) == 87
    assert value(on_battery, "mko_ups_battery_runtime_seconds", **ups_labels) == 1500
    assert value(samples, "mko_ups_status", flag="OL", **ups_labels) == 1
    assert ("mko_ups_status", (("flag", "OB"), ("ups", "lab-ups"))) not in samples
    assert value(samples, "mko_ups_on_battery", **ups_labels) == 0
    assert value(samples, "mko_ups_comm_ok", **ups_labels) == 1
    rule_labels = {"rule": f"wake after power returns (#{rule.id})", "cluster": "lab"}
    assert value(samples, "mko_rule_executions_total", **rule_labels) == 1
    assert value(samples, "mko_rule_successes_total", **rule_labels) == 1
    assert value(samples, "mko_rule_failures_total", **rule_labels) == 0
    assert value(samples, "mko_nodes", cluster="lab", state="up") == 3
    assert value(samples, "mko_nodes", cluster="lab", state="down") == 0
    assert value(samples, "mko_nodes", cluster="other", state="down") == 1
    assert value(samples, "mko_node_up", cluster="lab", node="lab-n1") == 1
    assert value(samples, "mko_node_up", cluster="other", node="spare") == 0
    assert value(samples, "mko_wake_attempts_total", method="ethernet") == 3
    assert value(samples, "mko_wake_successes_total", method="ethernet") == 3
    assert value(samples, "mko_wake_failures_total", method="ethernet") == 0
    assert value(samples, "mko_wake_packets_total", method="ethernet") >= 3
    assert value(samples, "mko_wake_time_to_up_seconds_count", method="ethernet") == 3
    assert value(samples, "mko_wake_time_to_up_seconds_bucket", method="ethernet", le="+Inf") == 3
    # Each lab node boots 0.3 s after its first packet, so none can be up sooner than that.
    assert value(samples, "mko_wake_time_to_up_seconds_sum", method="ethernet") >= 3 * 0.3
    wake_kinds = {labels for name, labels in samples if name == "mko_operation_duration_seconds_count"}
    assert (("kind", "wol_wake_cluster"),) in wake_kinds
    assert value(samples, "mko_operations_total", kind="wol_wake_cluster", status="succeeded") == 1
    assert abs(value(samples, "mko_reachability_checked_timestamp_seconds") - time.time()) < 60


def _rule_done(settings: Settings, rule_id: int) -> bool:
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            rule = session.get_one(PowerRule, rule_id)
            return rule.success_count + rule.failure_count >= 1
    finally:
        engine.dispose()
