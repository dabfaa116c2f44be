"""Operations know the process that runs them, and are closed as interrupted only once it is gone.

Owners here are real processes: this test process (alive), a child that ran and was reaped (gone), a
child killed but not yet reaped (a zombie: gone), this pid with another start time (pid reuse), and
one in another pid space (another host), judged by its heartbeat only.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.cluster.recovery import start_recovery
from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import create_node
from mko.inventory.schemas import ClusterCreate, NodeCreate
from mko.operations import ownership
from mko.operations.ownership import ProcessIdentity, close_orphaned, owner_gone, process_start, this_process
from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform.db.models.agents import WakeJob, WakeJobStatus
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.errors import ConflictError
from mko.platform.settings import Settings
from support.owners import exited_process, make_owned_by, reused_pid

ELSEWHERE = ProcessIdentity("other-host", 4242, "123456@00000000-0000-0000-0000-000000000000/4026531836")


def _operation(session: Session, kind: str = "cluster_recover", target_id: int | None = 1) -> Operation:
    operation = start_operation(
        session, kind=kind, target_type="cluster", target_id=target_id, actor=Actor("cli:test", "local")
    )
    record_step(session, operation, name="start n1", status=OperationStatus.RUNNING, node_id=None)
    return operation


def _reload(session: Session, operation_id: int) -> Operation:
    session.expire_all()
    return session.get_one(Operation, operation_id)


@pytest.fixture
def fast_heartbeat(settings: Settings) -> Iterator[None]:
    """A heartbeat every 0.05 s for this test; the defaults again afterwards."""
    ownership.configure(settings.model_copy(update={"operation_heartbeat_interval": 0.05}))
    yield
    ownership.configure(Settings())


def test_an_operation_records_this_process_as_its_owner(session: Session) -> None:
    before = utcnow()
    operation = _operation(session)
    me = this_process()
    assert (operation.owner_host, operation.owner_pid, operation.owner_start) == (me.host, me.pid, me.start)
    assert me.start is not None and me.start.partition("@")[0] == process_start(me.pid)
    assert operation.heartbeat_at is not None and operation.heartbeat_at >= before
    # Alive, so nothing is closed, however old its heartbeat: on this host the pid decides.
    assert close_orphaned(session, now=utcnow() + timedelta(days=1)) == []
    assert _reload(session, operation.id).status == OperationStatus.RUNNING


def test_an_operation_whose_process_exited_is_closed_as_interrupted_naming_it(session: Session) -> None:
    operation = _operation(session)
    dead = exited_process()
    make_owned_by(operation, dead)
    session.commit()
    [orphan] = close_orphaned(session)
    operation = _reload(session, operation.id)
    assert orphan.operation_id == operation.id and orphan.status == OperationStatus.FAILED
    since = operation.heartbeat_at.isoformat(timespec="seconds") if operation.heartbeat_at else "?"
    expected = f"interrupted: owner pid {dead.pid} on host {dead.host} gone since {since}"
    assert (operation.status, operation.summary) == (OperationStatus.FAILED, expected)
    assert operation.finished_at is not None
    [step] = operation.steps
    assert (step.status, step.message) == (OperationStatus.FAILED, expected)
    assert operation.result["interrupted"]["owner"] == {
        "host": dead.host,
        "pid": dead.pid,
        "start": dead.start,
    }
    assert operation.result["interrupted"]["closed_by"] == this_process().describe()
    assert close_orphaned(session) == []  # once


def test_a_zombie_owner_is_gone(session: Session) -> None:
    child = subprocess.Popen(["sleep", "30"])
    ticks = process_start(child.pid)
    me = this_process()
    operation = _operation(session)
    make_owned_by(operation, ProcessIdentity(me.host, child.pid, f"{ticks}@{me.space}"))
    session.commit()
    assert owner_gone(operation) is None
    child.kill()
    deadline = time.monotonic() + 5
    while process_start(child.pid) is not None:  # killed, not yet reaped: a zombie
        assert time.monotonic() < deadline, "the child did not die"
        time.sleep(0.01)
    assert owner_gone(operation) is not None
    child.wait()


def test_a_reused_pid_does_not_keep_an_operation_alive(session: Session) -> None:
    operation = _operation(session)
    reused = reused_pid()
    make_owned_by(operation, reused)
    session.commit()
    [orphan] = close_orphaned(session)
    assert orphan.reason.startswith(f"owner pid {reused.pid} on host {reused.host} gone since ")


def test_an_owner_elsewhere_is_gone_only_after_its_heartbeat_times_out(session: Session) -> None:
    operation = _operation(session)
    make_owned_by(operation, ELSEWHERE)
    session.commit()
    beat = operation.heartbeat_at
    assert beat is not None
    assert close_orphaned(session, now=beat + timedelta(seconds=59), timeout=60) == []
    [orphan] = close_orphaned(session, now=beat + timedelta(seconds=61), timeout=60)
    assert orphan.summary == (
        f"interrupted: owner pid 4242 on host other-host gone since {beat.isoformat(timespec='seconds')}"
        " (no heartbeat for 61 s)"
    )


def test_rows_without_an_owner_wait_for_the_timeout(session: Session) -> None:
    operation = _operation(session)
    operation.owner_host = operation.owner_pid = operation.owner_start = operation.heartbeat_at = None
    session.commit()
    started = operation.started_at
    assert started is not None
    assert close_orphaned(session, now=started + timedelta(seconds=30), timeout=60) == []
    [orphan] = close_orphaned(session, now=started + timedelta(seconds=90), timeout=60)
    assert orphan.reason.startswith("owner unknown (recorded before owners were), silent since ")


def test_wake_jobs_queued_for_agents_are_given_up_with_their_operation(session: Session) -> None:
    operation = _operation(session, kind="wol_wake_cluster")
    jobs = [
        WakeJob(
            operation_id=operation.id,
            site=site,
            status=WakeJobStatus.QUEUED if site == "b" else WakeJobStatus.CLAIMED,
            node_ids=[1],
            nodes=[],
            expires_at=utcnow() + timedelta(minutes=5),
        )
        for site in ("b", "c")
    ]
    session.add_all(jobs)
    make_owned_by(operation, exited_process())
    session.commit()
    [orphan] = close_orphaned(session)
    session.expire_all()
    for job in jobs:
        assert (job.status, job.error) == (WakeJobStatus.FAILED, orphan.summary)


def test_a_finished_operation_is_never_touched(session: Session) -> None:
    operation = _operation(session)
    make_owned_by(operation, exited_process())
    finish_operation(session, operation, status=OperationStatus.SUCCEEDED, summary="3/3 started")
    assert close_orphaned(session) == []
    assert _reload(session, operation.id).summary == "3/3 started"


def test_the_heartbeat_refreshes_open_operations_and_stops_with_them(
    session: Session, fast_heartbeat: None
) -> None:
    operation = _operation(session)
    first = operation.heartbeat_at
    assert first is not None
    deadline = time.monotonic() + 5
    while (_reload(session, operation.id).heartbeat_at or first) <= first:
        assert time.monotonic() < deadline, "no heartbeat came"
        time.sleep(0.02)
    finish_operation(session, _reload(session, operation.id), status=OperationStatus.SUCCEEDED, summary="ok")
    url = session.get_bind().engine.url

    def beating() -> bool:  # the heartbeat thread of this database (others may serve other tests')
        return any(beat.url == url for beat in list(ownership._beats.values()))

    deadline = time.monotonic() + 5
    while beating():
        assert time.monotonic() < deadline, "the heartbeat went on with nothing open"
        time.sleep(0.02)
    last = _reload(session, operation.id).heartbeat_at
    time.sleep(0.2)
    assert _reload(session, operation.id).heartbeat_at == last


def test_a_recovery_left_by_a_dead_cli_does_not_block_the_next(session: Session) -> None:
    cluster = create_cluster(session, ClusterCreate(name="home"))
    create_node(session, NodeCreate(hostname="n1", ip_address="127.0.0.2", cluster_id=cluster.id))
    first = start_recovery(session, cluster.id, Actor.cli(), 60)
    with pytest.raises(ConflictError, match=f"operation {first.operation_id} .* already running"):
        start_recovery(session, cluster.id, Actor.cli(), 60)  # its owner (this test) is alive
    make_owned_by(session.get_one(Operation, first.operation_id), exited_process())
    session.commit()
    second = start_recovery(session, cluster.id, Actor.cli(), 60)
    assert _reload(session, first.operation_id).summary.startswith("interrupted: owner pid ")
    assert _reload(session, second.operation_id).status == OperationStatus.RUNNING


def test_lists_over_api_and_cli_close_orphans_and_name_owners(
    client: TestClient, cli: CliRunner, session: Session
) -> None:
    alive = _operation(session, target_id=1)
    dead = _operation(session, target_id=2)
    gone = exited_process()
    make_owned_by(dead, gone)
    session.commit()

    listed = cli.invoke(app, ["operations", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert listed.stderr.startswith(
        f"closed operation {dead.id} (cluster_recover): interrupted: owner pid {gone.pid}"
    )
    me = this_process()
    rows = {row["id"]: row for row in client.get("/api/operations").json()}
    assert (rows[alive.id]["status"], rows[alive.id]["owner_pid"], rows[alive.id]["owner_host"]) == (
        "running",
        me.pid,
        me.host,
    )
    assert rows[dead.id]["status"] == "failed" and rows[dead.id]["owner_pid"] == gone.pid
    shown = cli.invoke(app, ["operations", "show", str(dead.id)])
    assert shown.exit_code == 0 and f"pid {gone.pid} on {gone.host}" in shown.stdout
    assert "interrupted: owner pid" in shown.stdout


def test_a_server_start_closes_what_dead_processes_left_and_keeps_what_live_ones_run(
    settings: Settings, session: Session
) -> None:
    from mko.app import create_app

    live_cli = subprocess.Popen(["sleep", "30"])
    try:
        me = this_process()
        running = _operation(session, target_id=1)
        make_owned_by(
            running, ProcessIdentity(me.host, live_cli.pid, f"{process_start(live_cli.pid)}@{me.space}")
        )
        left = _operation(session, target_id=2)
        make_owned_by(left, exited_process())
        session.commit()
        application = create_app(settings)
        with TestClient(application):
            pass
        application.state.engine.dispose()
        assert _reload(session, running.id).status == OperationStatus.RUNNING
        assert _reload(session, left.id).summary.startswith("interrupted: owner pid ")
        statuses = {op.id: op.status for op in session.scalars(select(Operation))}
        assert statuses == {running.id: OperationStatus.RUNNING, left.id: OperationStatus.FAILED}
    finally:
        live_cli.kill()
        live_cli.wait()


def test_the_brief_list_names_what_runs_in_one_line_each_and_closes_orphans_first(
    client: TestClient, session: Session
) -> None:
    alive = _operation(session, target_id=1)
    dead = _operation(session, target_id=2)
    make_owned_by(dead, exited_process())
    done = _operation(session, target_id=3)
    finish_operation(session, done, status=OperationStatus.SUCCEEDED, summary="ok")

    running = client.get("/api/operations/brief", params={"status": ["running", "pending"]})
    assert running.status_code == 200, running.text
    # The dead process's operation is closed before anyone is told it runs.
    assert [row["id"] for row in running.json()] == [alive.id]
    row = running.json()[0]
    assert "steps" not in row and "result" not in row and "parameters" not in row
    assert (row["status"], row["target_type"], row["target_id"]) == ("running", "cluster", 1)
    latest = client.get("/api/operations/brief", params={"limit": 2}).json()
    assert [(r["id"], r["status"]) for r in latest] == [(done.id, "succeeded"), (dead.id, "failed")]
    assert client.get("/api/operations/brief", params={"status": "sleeping"}).status_code == 422


def test_wol_status_shows_a_wake_left_by_a_dead_process_as_interrupted_and_writes_nothing(
    client: TestClient, session: Session, cli: CliRunner
) -> None:
    """The API's status is a read (a read-only session): it shows the orphan; ``mko wol status`` closes it."""
    node = create_node(
        session, NodeCreate(hostname="cp1", ip_address="127.0.0.1", wol_mac_address="02:00:00:00:00:01")
    )
    wake = start_operation(
        session, kind="wol_wake_node", target_type="node", target_id=node.id, actor=Actor("cli:t", "local")
    )
    record_step(session, wake, node_id=node.id, name="wake", status=OperationStatus.RUNNING)
    dead = exited_process()
    make_owned_by(wake, dead)
    session.commit()
    last = client.get(f"/api/nodes/{node.id}/wol/status").json()["last_wake"]
    assert last["operation_id"] == wake.id and last["status"] == "failed"
    assert last["message"].startswith(f"interrupted: owner pid {dead.pid} on host {dead.host} gone since")
    assert _reload(session, wake.id).status == OperationStatus.RUNNING  # not written by a GET
    assert cli.invoke(app, ["wol", "status", str(node.id)]).exit_code == 0
    assert _reload(session, wake.id).status == OperationStatus.FAILED  # the command closed it
