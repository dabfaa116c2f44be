"""Benchmark: how fast a waiting wake agent gets its job, and how fast a site without agents fails.

For SQLite and a throwaway PostgreSQL (mko.lab.postgres), an agent's claim long-polls through
:func:`mko.agents.claims.claim_wait` while a job is queued, ROUNDS times, measuring queue → claim:

* ``same process``: queued by this server (a wake from the API, the web UI or a rule): the in-process
  signal answers the claim;
* ``other process``: queued by someone else (a CLI wake, a second server); simulated by inserting the job
  from another connection without the in-process signal. PostgreSQL answers through LISTEN/NOTIFY,
  SQLite at the claim's next poll (every 0.25 s).

Then a wake of a cluster of NODES site nodes with no live agent: start to failed operation.
Needs root and the postgresql package. Reports figures; never fails on time.
Run with ``python bench/wake_agents.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from mko.access.principal import Principal
from mko.access.tokens import create_token
from mko.agents.claims import claim_wait
from mko.agents.doorbell import NOTIFY_CHANNEL, jobs_queued
from mko.agents.registry import heartbeat
from mko.agents.schemas import AgentHeartbeat, ClaimRequest
from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import create_node
from mko.inventory.schemas import ClusterCreate, NodeCreate
from mko.lab.postgres import PostgresServer
from mko.operations.records import Actor
from mko.platform.db.models.access import Role
from mko.platform.db.models.agents import WakeJob, WakeJobStatus
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade
from mko.platform.settings import Settings
from mko.wol.wake import make_schedule, run_wake, start_wake

ROUNDS = 20
NODES = 50


def _setup(factory: sessionmaker[Session]) -> tuple[Principal, int]:
    with factory() as session:
        token, _ = create_token(session, "bench-agent", Role.AGENT)
        principal = Principal(name=token.name, role=Role.AGENT, kind="token")
        heartbeat(session, principal, AgentHeartbeat(name="pi-b", site="b"))
        operation = Operation(
            kind="wol_wake_cluster",
            target_type="cluster",
            target_id=None,
            actor="bench",
            status=OperationStatus.RUNNING,
            parameters={},
            result={},
            started_at=utcnow(),
        )
        session.add(operation)
        session.commit()
        return principal, operation.id


def _insert_job(factory: sessionmaker[Session], operation_id: int, *, ring: bool) -> None:
    with factory() as session:
        session.add(
            WakeJob(
                operation_id=operation_id,
                site="b",
                status=WakeJobStatus.QUEUED,
                node_ids=[],
                nodes=[],
                schedule={},
                expires_at=utcnow() + timedelta(minutes=5),
            )
        )
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        session.commit()
    if ring:
        jobs_queued.ring()


async def _latencies(
    server: sessionmaker[Session], other: sessionmaker[Session], settings: Settings, *, ring: bool
) -> list[float]:
    principal, operation_id = _setup(server) if ring else _ids(server)
    request = ClaimRequest(name="pi-b", wait=10)
    results = []
    for _ in range(ROUNDS):
        claim = asyncio.create_task(claim_wait(server, settings, principal, request))
        await asyncio.sleep(0.3)  # the claim is waiting (and PostgreSQL's listener is up)
        started = time.perf_counter()
        await asyncio.to_thread(_insert_job, other, operation_id, ring=ring)
        job = await claim
        results.append(time.perf_counter() - started)
        assert job is not None
    return results


def _ids(factory: sessionmaker[Session]) -> tuple[Principal, int]:
    with factory() as session:
        operation = session.query(Operation).one()
        return Principal(name="bench-agent", role=Role.AGENT, kind="token"), operation.id


def _fail_fast(factory: sessionmaker[Session], settings: Settings) -> float:
    with factory() as session:
        cluster = create_cluster(session, ClusterCreate(name="far", site="c"))
        for index in range(NODES):
            create_node(
                session,
                NodeCreate(
                    hostname=f"far-{index}",
                    ip_address=f"10.77.{index // 250}.{index % 250 + 1}",
                    cluster_id=cluster.id,
                    wol_enabled=True,
                    wol_mac_address=f"02:77:00:00:{index // 100:02d}:{index % 100:02d}",
                ),
            )
        started = time.perf_counter()
        prepared = start_wake(
            session,
            target_type="cluster",
            target_id=cluster.id,
            schedule=make_schedule(settings, wait=True, timeout=600),
            actor=Actor("bench"),
        )
    operation = asyncio.run(run_wake(factory, settings, prepared))
    assert operation.status == OperationStatus.FAILED
    return time.perf_counter() - started


def _report(label: str, values: list[float]) -> None:
    ms = sorted(v * 1000 for v in values)
    print(f"  {label:<34} median {statistics.median(ms):7.1f} ms   max {ms[-1]:7.1f} ms   (n={len(ms)})")


def _run(name: str, url: str, settings: Settings) -> None:
    engine, other_engine = make_engine(url), make_engine(url)
    upgrade(engine)
    server, other = make_session_factory(engine), make_session_factory(other_engine)
    print(f"{name}: queue → claim, with the agent's claim already waiting")
    _report("queued by the same process", asyncio.run(_latencies(server, other, settings, ring=True)))
    _report("queued by another process", asyncio.run(_latencies(server, other, settings, ring=False)))
    failed_after = _fail_fast(server, settings) * 1000
    print(f"  wake of {NODES} site nodes, no live agent: failed after {failed_after:.1f} ms")
    engine.dispose()
    other_engine.dispose()


def main() -> None:
    """Print the figures for SQLite and PostgreSQL."""
    settings = Settings(database_url="sqlite://", log_dir=Path(tempfile.mkdtemp()) / "logs")
    with tempfile.TemporaryDirectory() as tmp:
        _run("SQLite", f"sqlite:///{tmp}/bench.db", settings)
    with PostgresServer() as postgres:
        _run("PostgreSQL", postgres.create_database("bench"), settings)


if __name__ == "__main__":
    main()
