"""High availability on a REAL PostgreSQL: the leader election, fencing, and the instance registry.

The server is a throwaway PostgreSQL (:class:`mko.lab.postgres.PostgresServer`, a Unix socket only);
each test gets a fresh database migrated to head. Connections are cut the way a crash or a network
failure cuts them for PostgreSQL: ``pg_terminate_backend`` on the leader's own election session.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from mko.ha.election import LeaderElection, cluster_status, live_instance_ids
from mko.ha.failover import take_over
from mko.inventory.clusters import create_cluster
from mko.inventory.schemas import ClusterCreate
from mko.lab.postgres import PostgresServer
from mko.operations import ownership
from mko.operations.identity import set_current_instance
from mko.operations.interrupted import interrupted_reason
from mko.operations.kinds import RULE_OPERATION_KIND
from mko.operations.ownership import this_process
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.ha import Instance
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import PowerEvent, UpsEvent
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.rules.engine import RuleEngine
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule
from mko.ups.events import DetectedEvent
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups, record_events

pytestmark = pytest.mark.anyio

_databases = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    # Database work a test's instances ran in worker threads may still hold a connection (a wait a
    # timeout abandoned): let it come back, so that dispose() closes it, instead of the garbage collector
    # meeting it, still open, during some later test. One still out after that is this test's leak.
    deadline = time.monotonic() + 15
    while engine.pool.checkedout() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    leaked = engine.pool.checkedout()  # type: ignore[attr-defined]
    engine.dispose()
    assert not leaked, f"{leaked} connection(s) still checked out 15 s after the test"


def fast(url: str) -> Settings:
    """Settings with short election checks, so the tests take seconds."""
    return Settings(
        database_url=url,
        ha_check_interval=0.1,
        ha_check_timeout=0.5,
        ha_heartbeat_interval=0.2,
        ha_dead_after=1.0,
        ha_failover_timeout=3.0,
    )


class Duties:
    """What an elector's hooks did, in order: "elected" / "lost"."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.running = False

    async def elected(self) -> None:
        self.log.append("elected")
        self.running = True

    async def lost(self) -> None:
        self.log.append("lost")
        self.running = False


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def terminate_election_session(engine: Engine, name: str) -> int:
    """Kill an instance's election session server-side (as PostgreSQL does to a dead client's)."""
    with engine.begin() as connection:
        killed = connection.execute(
            text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :n"),
            {"n": f"mko-ha {name}"},
        ).scalar_one()
    return int(killed)


def electors(engine: Engine, url: str, *names: str) -> list[tuple[LeaderElection, Duties]]:
    factory = make_session_factory(engine)
    made = []
    for name in names:
        duties = Duties()
        made.append(
            (
                LeaderElection(fast(url), factory, on_elected=duties.elected, on_lost=duties.lost, name=name),
                duties,
            )
        )
    return made


async def test_of_two_electors_exactly_one_leads_and_the_other_takes_over_when_its_session_dies(
    pg_url: str, pg_engine: Engine
) -> None:
    (a, da), (b, db) = pair = electors(pg_engine, pg_url, "alpha", "beta")
    for election, _ in pair:
        await election.start()
    try:
        await wait_for(lambda: a.is_leader or b.is_leader, 5, "a leader")
        await asyncio.sleep(0.5)  # five rounds of checks: the follower never gets the lock
        assert a.is_leader != b.is_leader
        leader, follower = (a, b) if a.is_leader else (b, a)
        lead_duties, follow_duties = (da, db) if a.is_leader else (db, da)
        assert lead_duties.log == ["elected"] and follow_duties.log == []
        with make_session_factory(pg_engine)() as session:
            status = cluster_status(session, fast(pg_url))
        assert status["database"] == "postgresql" and status["leader"] == leader.name
        assert {i["name"]: (i["online"], i["leader"]) for i in status["instances"]} == {
            leader.name: (True, True),
            follower.name: (True, False),
        }

        assert terminate_election_session(pg_engine, leader.name) == 1
        # is_leader turns true as the duties start; they are running once on_elected returned.
        await wait_for(lambda: follower.is_leader and follow_duties.running, 5, "the follower to take over")
        # Fencing: the old leader stopped its duties when its check failed.
        await wait_for(lambda: not lead_duties.running, 5, "the old leader to fence itself")
        assert lead_duties.log == ["elected", "lost"] and follow_duties.log == ["elected"]
        # It reconnects as a follower and stays one while the new leader lives.
        await wait_for(lambda: leader._connection is not None, 5, "the old leader to reconnect")
        await asyncio.sleep(0.5)
        assert not leader.is_leader and follower.is_leader
        with make_session_factory(pg_engine)() as session:
            status = cluster_status(session, fast(pg_url))
        assert status["leader"] == follower.name and status["online"] == 2
    finally:
        for election, _ in pair:
            await election.stop()
    with make_session_factory(pg_engine)() as session:
        status = cluster_status(session, fast(pg_url))
    assert status["leader"] is None and status["online"] == 0


async def test_a_leader_whose_session_dies_fences_itself_even_alone(pg_url: str, pg_engine: Engine) -> None:
    [(alone, duties)] = electors(pg_engine, pg_url, "solo")
    await alone.start()
    try:
        await wait_for(lambda: alone.is_leader, 5, "the leadership")
        assert terminate_election_session(pg_engine, "solo") == 1
        await wait_for(lambda: duties.log[-1:] == ["lost"], 5, "fencing")
        # Nobody else holds the lock: the same instance wins it back on its new session.
        await wait_for(lambda: len(duties.log) == 3, 5, "the leadership again")
        assert duties.log == ["elected", "lost", "elected"]
    finally:
        await alone.stop()


async def test_liveness_follows_the_postgresql_session(pg_url: str, pg_engine: Engine) -> None:
    (a, _), (b, _) = pair = electors(pg_engine, pg_url, "one", "two")
    for election, _ in pair:
        await election.start()
    try:
        await wait_for(lambda: a._connection is not None and b._connection is not None, 5, "sessions")
        await wait_for(lambda: a.is_leader or b.is_leader, 5, "a leader")
        with make_session_factory(pg_engine)() as session:
            assert live_instance_ids(session) == {a.instance_id, b.instance_id}
        await b.stop()
        with make_session_factory(pg_engine)() as session:
            assert live_instance_ids(session) == {a.instance_id}
            status = cluster_status(session, fast(pg_url))
        offline = [i for i in status["instances"] if not i["online"]]
        assert [i["name"] for i in offline] == ["two"] and offline[0]["stopped_at"] is not None
    finally:
        await a.stop()


async def test_an_event_is_claimed_by_one_instance_only(pg_url: str, pg_engine: Engine) -> None:
    settings = fast(pg_url)
    factory = make_session_factory(pg_engine)
    with factory() as session:
        ups = create_ups(session, settings, UpsCreate(name="u", ups_name="myups"))
        cluster = create_cluster(session, ClusterCreate(name="c")).id
        create_rule(
            session,
            RuleCreate(
                ups_id=ups.id,
                cluster_id=cluster,
                power_event=PowerEvent.POWER_LOSS,
                cluster_action=ClusterAction.GRACEFUL_SHUTDOWN,
                action_delay=3600,
            ),
        )
        detected = DetectedEvent(PowerEvent.POWER_LOSS, utcnow(), "OL", "OB", 90.0, "on battery")
        [event] = record_events(session, ups.id, [detected])
    # Two engines (two instances' worth) get the same stored event at the same moment.
    engines = [RuleEngine(factory, settings), RuleEngine(factory, settings)]
    copies = []
    for _ in engines:
        with factory() as session:
            copies.append(session.get_one(UpsEvent, event.id))
    try:
        results = await asyncio.gather(*(e.handle(c, "u") for e, c in zip(engines, copies, strict=True)))
    finally:
        for engine in engines:
            await engine.close()
    assert sorted(len(r) for r in results) == [0, 1]
    with factory() as session:
        executions = session.scalars(select(Operation).where(Operation.kind == RULE_OPERATION_KIND)).all()
        assert len(executions) == 1
        assert session.get_one(UpsEvent, event.id).handled_at is not None


async def test_a_new_leader_fails_what_must_not_be_repeated_and_leaves_others_alone(
    pg_url: str, pg_engine: Engine
) -> None:
    # "alive" beat at set-up and "dead" 5 minutes ago: a minute's grace keeps "alive" alive however slow
    # a loaded machine is between the set-up and the take-over (1 s, the fast setting, did not).
    settings = fast(pg_url).model_copy(update={"ha_dead_after": 60.0})
    factory = make_session_factory(pg_engine)
    long_ago = utcnow() - timedelta(minutes=5)
    with factory() as session:
        session.add_all(
            [
                Instance(name="dead", hostname="h", pid=1, heartbeat_at=long_ago, started_at=long_ago),
                Instance(name="alive", hostname="h", pid=2, heartbeat_at=utcnow(), started_at=long_ago),
            ]
        )
        ups = create_ups(session, settings, UpsCreate(name="u", ups_name="myups"))
        cluster = create_cluster(session, ClusterCreate(name="c")).id
        rule = create_rule(
            session,
            RuleCreate(
                ups_id=ups.id,
                cluster_id=cluster,
                power_event=PowerEvent.POWER_LOSS,
                cluster_action=ClusterAction.GRACEFUL_SHUTDOWN,
            ),
        )

        def running(kind: str, instance: str | None, actor: str, **extra: Any) -> Operation:
            operation = Operation(
                kind=kind,
                target_type="cluster",
                target_id=cluster,
                actor=actor,
                source="",
                status=OperationStatus.RUNNING,
                summary="",
                parameters={},
                result={},
                instance=instance,
                started_at=long_ago,
                **extra,
            )
            operation.steps.append(
                OperationStep(
                    seq=1, name="poweroff n1", status=OperationStatus.RUNNING, message="", detail={}
                )
            )
            session.add(operation)
            session.flush()
            return operation

        shutdown_op = running("cluster_shutdown", "dead", "user:admin")
        rule_op = running(
            RULE_OPERATION_KIND,
            "dead",
            f"rule:{rule.id}",
        )
        rule_op.source = "ups:u"
        rule_op.parameters = {
            "rule_id": rule.id,
            "rule_name": rule.name,
            "cluster_action": "graceful_shutdown",
        }
        rule_op.result = {
            "event": {"id": 1, "ups_id": ups.id, "event": "power_loss", "occurred_at": long_ago.isoformat()}
        }
        cli_op = running("cluster_shutdown", None, "cli:root")
        alive_op = running("cluster_shutdown", "alive", "user:admin")
        session.commit()
        ids = shutdown_op.id, rule_op.id, cli_op.id, alive_op.id
    engine = RuleEngine(factory, settings)
    set_current_instance("me")
    try:
        taken = await take_over(
            factory, settings, "me", utcnow(), engine=engine, spawn=lambda work: work.close()
        )
        await engine.idle()
    finally:
        set_current_instance(None)
        await engine.close()
    assert sorted(taken) == sorted(ids[:2])
    with factory() as session:
        shutdown_after, rule_after, cli_after, alive_after = (session.get_one(Operation, i) for i in ids)
        reason = interrupted_reason("dead")
        assert "a power-off never runs twice" in reason
        assert (shutdown_after.status, shutdown_after.summary) == (OperationStatus.FAILED, reason)
        assert shutdown_after.steps[0].status == OperationStatus.FAILED and shutdown_after.instance == "me"
        # Whoever claims an operation owns it from then on (mko.operations.ownership): its process, its
        # heartbeat.
        me = this_process()
        assert (rule_after.owner_host, rule_after.owner_pid, rule_after.owner_start) == (
            me.host,
            me.pid,
            me.start,
        )
        assert rule_after.status == OperationStatus.FAILED and reason in rule_after.summary
        assert session.get_one(PowerRule, rule.id).failure_count == 1
        assert (cli_after.status, alive_after.status) == (OperationStatus.RUNNING, OperationStatus.RUNNING)


@pytest.fixture
def fast_heartbeat(pg_url: str) -> Iterator[None]:
    """Operation heartbeats every 0.05 s for this test; the defaults again afterwards."""
    ownership.configure(fast(pg_url).model_copy(update={"operation_heartbeat_interval": 0.05}))
    yield
    ownership.configure(Settings())


def test_an_operations_heartbeat_outlives_its_owners_engine_and_leaves_no_connection_open(
    pg_url: str, pg_engine: Engine, fast_heartbeat: None
) -> None:
    # The engine an operation was recorded through is disposed of while the operation still runs (a CLI
    # command's first engine, a server shutting down): the heartbeat goes on, on a connection of its own.
    owner = make_engine(pg_url)
    with make_session_factory(owner)() as session:
        operation_id = start_operation(
            session, kind="cluster_recover", target_type="cluster", target_id=1, actor=Actor.cli()
        ).id
    owner.dispose()
    observer = make_session_factory(pg_engine)

    def heartbeat_at() -> Any:
        with observer() as session:
            return session.get_one(Operation, operation_id).heartbeat_at

    first = heartbeat_at()
    deadline = time.monotonic() + 10
    while heartbeat_at() <= first:
        assert time.monotonic() < deadline, "no heartbeat after the owner's engine was disposed of"
        time.sleep(0.02)
    with observer() as session:
        finish_operation(
            session, session.get_one(Operation, operation_id), status=OperationStatus.SUCCEEDED, summary="ok"
        )
    beat = f"{os.getpid()}:{owner.url.render_as_string(hide_password=True)}"  # one per process and database
    deadline = time.monotonic() + 10
    while beat in ownership._beats:
        assert time.monotonic() < deadline, "the heartbeat went on with nothing open"
        time.sleep(0.02)
    # The disposed engine was never opened again, and no connection is left on the database: none
    # for the garbage collector to find open later.
    assert owner.pool.checkedin() == 0  # type: ignore[attr-defined]
    pg_engine.dispose()  # the observer's idle connections
    with pg_engine.connect() as connection:
        others = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert others == 0


def _upgrade_when_released(url: str, gate: Any, results: Any) -> None:
    """One starting instance: wait for the others, then upgrade the database (a forked process)."""
    from mko.platform.db.upgrade import upgrade_database

    gate.wait()
    try:
        before, after, _ = upgrade_database(url, backup=False)
        results.put(("ok", before, after))
    except Exception as exc:
        results.put(("error", type(exc).__name__, str(exc)))


def test_instances_started_together_on_a_new_database_migrate_it_once(postgres: PostgresServer) -> None:
    import multiprocessing

    from mko.platform.db.migrate import current_revision, head_revision

    url = postgres.create_database(f"ha_{next(_databases)}")
    context = multiprocessing.get_context("fork")
    gate, results = context.Barrier(4), context.Queue()
    # Four instances starting at the very same moment, each upgrading the empty database first.
    starts = [context.Process(target=_upgrade_when_released, args=(url, gate, results)) for _ in range(4)]
    for process in starts:
        process.start()
    for process in starts:
        process.join(60)
    stuck = [p.pid for p in starts if p.is_alive()]
    for process in starts:
        process.kill()
    assert not stuck, f"upgrades still running after 60 s: {stuck}"
    outcomes = [results.get(timeout=5) for _ in starts]
    assert all(outcome[0] == "ok" and outcome[2] == head_revision() for outcome in outcomes), outcomes
    assert sum(1 for outcome in outcomes if outcome[1] is None) == 1, outcomes  # only one found it empty
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
