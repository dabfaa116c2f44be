"""Schedules: input checks, cron in time zones, missed runs, conflicts and skips, with a controlled clock."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app as cli_app
from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import create_node
from mko.inventory.schemas import ClusterCreate, NodeCreate
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.schedules import Schedule
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.schedules.cron import runs_between
from mko.schedules.scheduler import Scheduler
from mko.schedules.schemas import ScheduleCreate
from mko.schedules.service import create_schedule

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_6AM = datetime(2026, 5, 4, 6, 0, tzinfo=BERLIN)  # 2026-05-04 is a Monday (CEST, UTC+2)


class Clock:
    """A clock the test moves; ``sleep`` advances it instead of waiting, and never past ``stop``."""

    def __init__(self, start: datetime, stop: datetime | None = None) -> None:
        self.now = start.astimezone(UTC)
        self.stop = stop
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.stop is not None and self.now >= self.stop:
            await asyncio.Event().wait()  # time stands still once the test has seen what it wanted
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections: a node that is up."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def _cluster_with_node(session: Session, port: int) -> tuple[int, int]:
    cluster = create_cluster(session, ClusterCreate(name="lab"))
    node = create_node(
        session,
        NodeCreate(
            hostname="cp1",
            ip_address="127.0.0.1",
            cluster_id=cluster.id,
            wol_enabled=True,
            wol_mac_address="02:13:00:00:00:11",
            probe_port=port,
        ),
    )
    return cluster.id, node.id


def _scheduler(settings: Settings, clock: Clock) -> Scheduler:
    return Scheduler(
        make_session_factory(make_engine(settings.database_url)), settings, clock=clock, sleep=clock.sleep
    )


def _operations(session: Session, kind: str) -> list[Operation]:
    session.expire_all()
    return list(session.scalars(select(Operation).where(Operation.kind == kind).order_by(Operation.id)))


def test_bad_schedules_are_refused_naming_the_field(client: TestClient, cli: CliRunner) -> None:
    cluster = client.post("/api/clusters", json={"name": "lab"}).json()
    base = {
        "name": "morning",
        "cron": "30 7 * * 1-5",
        "timezone": "Europe/Berlin",
        "cluster_id": cluster["id"],
    }
    cases = {
        "cron": {"cron": "61 7 * * *"},
        "timezone": {"timezone": "Mars/Olympus"},
        "action": {"action": "reboot"},
        "cluster_id": {"cluster_id": 99},
        "node_id": {"cluster_id": None, "node_id": 5},
        "retries": {"retries": 0},
        "notify_urls": {"notify_urls": ["nosuchservice://x"]},
    }
    for field, change in cases.items():
        response = client.post("/api/schedules", json=base | change)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["detail"][0]["loc"][-1] == field
    shutdown = client.post(
        "/api/schedules", json=base | {"action": "shutdown", "cluster_id": None, "node_id": 5}
    )
    assert shutdown.status_code == 422 and "shutdown acts on a whole cluster" in shutdown.text
    assert client.post("/api/schedules", json=base | {"cron": "* * * * * *"}).status_code == 422  # seconds
    assert client.get("/api/schedules").json() == []
    result = cli.invoke(
        cli_app, ["schedule", "add", "x", "--cron", "30 7 * * *", "--node", "1", "--action", "shutdown"]
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "shutdown acts on a whole cluster" in result.stderr
    # A cluster's scheduled shutdown is accepted (tests/integration/cluster/test_shutdown_lab.py runs one).
    result = cli.invoke(
        cli_app,
        [
            "schedule",
            "add",
            "night",
            "--cron",
            "0 23 * * *",
            "--cluster",
            "1",
            "--action",
            "shutdown",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "shutdown"
    result = cli.invoke(
        cli_app, ["schedule", "add", "x", "--cron", "30 7 * * *", "--cluster", "1", "--tz", "Nowhere"]
    )
    assert result.exit_code == 2 and result.stderr.startswith("error: timezone:")


def test_cron_times_follow_the_time_zone_across_daylight_saving() -> None:
    daily = "30 2 * * *"
    # Clocks go back on 2026-10-25: 02:30 happens twice, the schedule runs once.
    autumn = runs_between(daily, BERLIN, datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN), limit=3)
    assert [r.astimezone(BERLIN).strftime("%m-%d %H:%M %Z") for r in autumn] == [
        "10-25 02:30 CEST",
        "10-26 02:30 CET",
        "10-27 02:30 CET",
    ]
    # Clocks go forward on 2026-03-29: 02:30 does not exist, the run happens at 03:00.
    spring = runs_between(daily, BERLIN, datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), limit=2)
    assert spring[0] == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert spring[1] == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)
    weekdays = runs_between("30 7 * * 1-5", BERLIN, datetime(2026, 5, 8, 8, 0, tzinfo=BERLIN), limit=1)
    assert weekdays == [datetime(2026, 5, 11, 5, 30, tzinfo=UTC)]  # Friday after 07:30 → Monday 07:30 CEST


def test_api_cli_and_web_show_next_runs_and_pause_resume(
    client: TestClient, web: Any, cli: CliRunner, settings: Settings, session: Session
) -> None:
    cluster = client.post("/api/clusters", json={"name": "lab"}).json()
    body = {
        "name": "morning",
        "cron": "30 7 * * 1-5",
        "timezone": "Europe/Berlin",
        "cluster_id": cluster["id"],
    }
    created = client.post("/api/schedules", json=body | {"wait": True, "timeout": 120})
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown["target"] == f"cluster lab (#{cluster['id']})"
    assert shown["options"] == {"wait": True, "timeout": 120.0}
    assert len(shown["next_runs"]) == 3
    first = datetime.fromisoformat(shown["next_runs"][0]).astimezone(BERLIN)
    assert (first.hour, first.minute, first.weekday() < 5) == (7, 30, True)
    assert shown["next_run_local"].endswith(("CEST", "CET")) and "07:30" in shown["next_run_local"]
    assert client.post("/api/schedules", json=body).status_code == 409
    paused = client.post(f"/api/schedules/{shown['id']}/pause").json()
    assert paused["enabled"] is False and paused["next_runs"] == []
    listed = cli.invoke(cli_app, ["schedule", "list", "--json"])
    assert listed.exit_code == 0, listed.stderr
    assert '"enabled": false' in listed.stdout
    resumed = cli.invoke(cli_app, ["schedule", "resume", str(shown["id"]), "--json"])
    assert resumed.exit_code == 0 and '"enabled": true' in resumed.stdout
    page = web.get("/schedules")
    assert page.status_code == 200 and "morning" in page.text and 'href="/schedules"' in page.text
    bad = web.form("/schedules", data={"name": "x", "cron": "nope", "target": f"cluster:{cluster['id']}"})
    assert bad.status_code == 422 and 'data-error-for="cron"' in bad.text
    added = web.form(
        "/schedules",
        data={"name": "nightly", "cron": "@daily", "target": f"cluster:{cluster['id']}", "timezone": "UTC"},
        follow_redirects=False,
    )
    assert added.status_code == 303
    removed = web.form(f"/schedules/{shown['id']}/remove", follow_redirects=False)
    assert removed.status_code == 303
    assert [s["name"] for s in client.get("/api/schedules").json()] == ["nightly"]


def test_missed_runs_are_reported_once_and_not_replayed(
    settings: Settings, session: Session, listener: int
) -> None:
    cluster_id, _ = _cluster_with_node(session, listener)
    schedule = create_schedule(
        session,
        settings,
        ScheduleCreate(name="morning", cron="30 7 * * *", timezone="Europe/Berlin", cluster_id=cluster_id),
        now=MONDAY_6AM,
    )
    # The server was down from Monday 06:00 to Thursday 12:00: Mon, Tue, Wed and Thu 07:30 passed.
    clock = Clock(MONDAY_6AM + timedelta(days=3, hours=6))
    scheduler = _scheduler(settings, clock)
    assert asyncio.run(scheduler.tick()) == []
    [missed] = _operations(session, "schedule_missed")
    assert missed.status == OperationStatus.CANCELLED
    assert missed.summary.startswith("missed 4 run(s) while mko was not running (2026-05-04 07:30 CEST …")
    assert missed.summary.endswith("2026-05-07 07:30 CEST); not replayed")
    assert missed.actor == f"schedule:{schedule.id}" and missed.target_id == cluster_id
    assert _operations(session, "schedule_wake") == []
    assert asyncio.run(scheduler.tick()) == []  # reported once
    assert len(_operations(session, "schedule_missed")) == 1


def test_a_late_run_within_grace_runs_and_skips_nodes_already_up(
    settings: Settings, session: Session, listener: int
) -> None:
    cluster_id, node_id = _cluster_with_node(session, listener)
    schedule = create_schedule(
        session,
        settings,
        ScheduleCreate(name="morning", cron="30 7 * * *", timezone="Europe/Berlin", cluster_id=cluster_id),
        now=MONDAY_6AM,
    )
    clock = Clock(datetime(2026, 5, 4, 7, 30, 20, tzinfo=BERLIN))  # 20 s late, grace is 60 s
    scheduler = _scheduler(settings, clock)

    async def run() -> list[Operation]:
        return list(await asyncio.gather(*await scheduler.tick()))

    [operation] = asyncio.run(run())
    assert operation.status == OperationStatus.SUCCEEDED
    assert operation.summary == "all 1 node(s) already up; nothing sent"
    assert operation.parameters["scheduled_for"] == "2026-05-04T05:30:00+00:00"
    assert [(s.name, s.node_id, s.status) for s in _operations(session, "schedule_wake")[0].steps] == [
        ("probe", None, OperationStatus.SUCCEEDED),
        ("skip cp1", node_id, OperationStatus.SUCCEEDED),
    ]
    assert not [op for op in _operations(session, "wol_wake_nodes")]  # nothing was woken
    session.expire_all()
    stored = session.get_one(Schedule, schedule.id)
    assert stored.last_status == OperationStatus.SUCCEEDED and stored.last_operation_id == operation.id
    assert _operations(session, "schedule_missed") == []


def test_a_run_never_starts_while_another_operation_runs_on_the_cluster(
    settings: Settings, session: Session, listener: int
) -> None:
    cluster_id, node_id = _cluster_with_node(session, listener)
    create_schedule(
        session,
        settings,
        ScheduleCreate(name="node wake", cron="30 7 * * *", timezone="Europe/Berlin", node_id=node_id),
        now=MONDAY_6AM,
    )
    busy = start_operation(
        session, kind="cluster_shutdown", target_type="cluster", target_id=cluster_id, actor=Actor("test")
    )
    clock = Clock(datetime(2026, 5, 4, 7, 30, 0, tzinfo=BERLIN))
    scheduler = _scheduler(settings, clock)
    assert asyncio.run(scheduler.tick()) == []
    [refused] = _operations(session, "schedule_wake")
    assert refused.status == OperationStatus.CANCELLED
    assert (
        refused.summary
        == f"not started: operation #{busy.id} (cluster_shutdown) is running on cluster #{cluster_id}"
    )
    finish_operation(session, busy, status=OperationStatus.SUCCEEDED, summary="done")
    clock.now += timedelta(days=1)

    async def next_day() -> list[Operation]:
        return list(await asyncio.gather(*await scheduler.tick()))

    [ran] = asyncio.run(next_day())
    assert ran.status == OperationStatus.SUCCEEDED


def test_the_loop_sleeps_exactly_until_the_next_run(
    settings: Settings, session: Session, listener: int
) -> None:
    cluster_id, _ = _cluster_with_node(session, listener)
    start = datetime(2026, 5, 4, 7, 29, 10, tzinfo=BERLIN)
    create_schedule(
        session,
        settings,
        ScheduleCreate(name="morning", cron="30 7 * * *", timezone="Europe/Berlin", cluster_id=cluster_id),
        now=start,
    )
    clock = Clock(start, stop=datetime(2026, 5, 4, 7, 30, tzinfo=BERLIN))
    scheduler = _scheduler(settings, clock)

    async def run_until_fired() -> Operation:
        loop = asyncio.create_task(scheduler.run())
        try:
            while not scheduler.tasks:
                await asyncio.sleep(0)
            fired_at = clock.now
            [task] = scheduler.tasks
            operation: Operation = await task
            assert fired_at == datetime(2026, 5, 4, 7, 30, tzinfo=BERLIN)
            return operation
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    operation = asyncio.run(run_until_fired())
    # Polls at most every schedule_poll_max (15 s), the last sleep ends exactly at 07:30:00.
    assert clock.sleeps == [15.0, 15.0, 15.0, 5.0]
    assert operation.parameters["fired_at"] == "2026-05-04T05:30:00+00:00"
