"""An agent's side of the queue: claim a job (waiting for one), report it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mko.access.principal import Principal
from mko.agents.doorbell import _listen_for_jobs, jobs_queued, jobs_reported
from mko.agents.registry import _agent_of, _check_name
from mko.inventory.snapshots import param_values
from mko.platform.db.models.agents import Agent, WakeJob, WakeJobStatus
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.secrets import SecretBox
from mko.platform.settings import Settings

if TYPE_CHECKING:
    from mko.agents.schemas import ClaimRequest, JobReport

__all__ = ["claim_job", "claim_wait", "report_job"]

log = logging.getLogger("mko.agents")


CLAIM_POLL = 0.25


def _claim_once(session: Session, agent: Agent) -> WakeJob | None:
    """Hand the oldest claimable job of the agent's site to it, or None; atomic on every database."""
    now = utcnow()
    running = select(Operation.id).where(Operation.status == OperationStatus.RUNNING)
    for _ in range(10):
        candidate = session.scalars(
            select(WakeJob.id)
            .where(
                WakeJob.site == agent.site,
                WakeJob.status == WakeJobStatus.QUEUED,
                WakeJob.expires_at > now,
                WakeJob.operation_id.in_(running),
            )
            .order_by(WakeJob.id)
            .limit(1)
            # PostgreSQL: concurrent claimers skip the row one of them holds instead of queueing behind
            # it. SQLite ignores this; there the status condition of the UPDATE below decides the race.
            .with_for_update(skip_locked=True)
        ).first()
        if candidate is None:
            session.rollback()
            return None
        result = session.execute(
            update(WakeJob)
            .where(WakeJob.id == candidate, WakeJob.status == WakeJobStatus.QUEUED)
            .values(status=WakeJobStatus.CLAIMED, claimed_by=agent.name, claimed_at=now)
        )
        if getattr(result, "rowcount", 0) == 1:
            session.commit()
            job = session.get_one(WakeJob, candidate)
            session.refresh(job)
            log.info("wake job %s (site %s) claimed by agent %s", job.id, job.site, agent.name)
            return job
        session.rollback()  # another agent took it between our read and our write: try the next
    return None


def claim_job(
    session: Session, principal: Principal, name: str, *, alive: bool = True
) -> dict[str, Any] | None:
    """One claim attempt for the named agent; the job to run, or None.

    ``alive``: the call also counts as a heartbeat (a long poll's first attempt, not its repeats: the
    agent may have gone while the server still waits on its behalf).
    """
    agent = _agent_of(session, principal, _check_name(name))
    if alive:
        agent.last_heartbeat_at = utcnow()
        session.commit()
    job = _claim_once(session, agent)
    return None if job is None else _job_for_agent(session, job)


def _job_for_agent(session: Session, job: WakeJob) -> dict[str, Any]:
    """The claimed job as the agent receives it, SecureOn passwords read from the nodes only now."""
    nodes = []
    for entry in job.nodes:
        item = dict(entry)
        if item.get("secureon"):
            node = session.get(Node, item["node_id"])
            stored = param_values(node).get("wol_secureon") if node is not None else None
            item["secureon"] = SecretBox.for_session(session).decrypt(stored) if stored else None
        else:
            item["secureon"] = None
        nodes.append(item)
    return {
        "job_id": job.id,
        "operation_id": job.operation_id,
        "site": job.site,
        "nodes": nodes,
        "schedule": job.schedule,
        "expires_at": job.expires_at.isoformat(),
    }


async def claim_wait(
    session_factory: sessionmaker[Session],
    settings: Settings,
    principal: Principal,
    request: ClaimRequest,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, Any] | None:
    """Long poll: a job as soon as one is queued for the agent's site, or None after the wait (or as
    soon as ``gone`` says the agent hung up: a job claimed for nobody would wait for its timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(request.wait, settings.agent_claim_wait)

    def attempt(alive: bool) -> dict[str, Any] | None:
        with session_factory() as session:
            return claim_job(session, principal, request.name, alive=alive)

    _listen_for_jobs(session_factory)
    first = True
    while True:
        # In a thread: a write waiting for SQLite's lock must not stall the server's event loop.
        job = await asyncio.to_thread(attempt, first)
        first = False
        if job is not None:
            return job
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await jobs_queued.wait(min(remaining, CLAIM_POLL))
        if gone is not None and await gone():
            return None


def report_job(session: Session, principal: Principal, job_id: int, report: JobReport) -> WakeJob:
    """Record a claimed job's result; only the agent that claimed it may, and only once."""
    agent = _agent_of(session, principal, _check_name(report.name))
    job = session.get(WakeJob, job_id)
    if job is None:
        raise NotFoundError("wake job", job_id)
    if job.claimed_by != agent.name:
        raise ConflictError(f"wake job {job_id} was not claimed by agent {agent.name}")
    unknown = {o.node_id for o in report.nodes} - set(job.node_ids)
    if unknown:
        raise InputError("nodes", f"node(s) {sorted(unknown)} are not part of wake job {job_id}")
    failed = report.error is not None and not report.nodes
    values: dict[str, Any] = {
        "status": WakeJobStatus.FAILED if failed else WakeJobStatus.DONE,
        "result": {"nodes": [o.model_dump() for o in report.nodes]},
        "error": report.error,
        "finished_at": utcnow(),
    }
    result = session.execute(
        update(WakeJob).where(WakeJob.id == job_id, WakeJob.status == WakeJobStatus.CLAIMED).values(**values)
    )
    agent.last_heartbeat_at = utcnow()
    session.commit()
    if getattr(result, "rowcount", 0) != 1:
        session.refresh(job)
        raise ConflictError(f"wake job {job_id} is already {job.status.value}: {job.error or 'reported'}")
    jobs_reported.ring()
    session.refresh(job)
    log.info("wake job %s reported by agent %s: %s", job_id, agent.name, job.status.value)
    return job
