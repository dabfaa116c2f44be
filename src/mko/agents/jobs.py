"""Wake agents: magic packets for nodes in other broadcast domains, sent by an agent on their LAN.

Magic packets do not cross routers. A node (or its cluster) with a ``site`` is woken by that site's
agents (``mko agent --site NAME``, see :mod:`mko.agents.agent`), small always-on machines on the node's
LAN that talk to the orchestrator's API with a token of role ``agent``:

* a wake (:func:`mko.wol.wake.run_wake`) queues one :class:`~mko.platform.db.models.agents.WakeJob` per site
  in its operation, with everything the agent needs per node (the SecureOn password only by reference);
* a site without a live agent (no heartbeat for ``agent_offline_after`` seconds) fails those nodes at
  once with "no live agent for site X"; the rest of the wake goes on;
* agents long-poll ``POST /api/agents/claim``; a job is handed to exactly one of them
  (``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, a conditional ``UPDATE`` everywhere, which is
  what makes it atomic on SQLite);
* the agent wakes and probes the nodes with the same schedule and driver the orchestrator uses
  (:func:`mko.power.base.power_on`, :class:`mko.power.drivers.wol.WolDriver`) and reports per-node outcomes,
  which become the operation's steps as for local nodes.

Only magic-packet methods (``ethernet``, ``ethernet-raw``) are routed to agents: Proxmox, IPMI and
Redfish are API calls that cross routers, and their credentials stay on the orchestrator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from mko.agents.doorbell import NOTIFY_CHANNEL, jobs_queued, jobs_reported
from mko.agents.registry import is_online, live_agents
from mko.agents.routing import node_payload
from mko.platform.db.models.agents import Agent, WakeJob, WakeJobStatus
from mko.platform.db.models.base import utcnow
from mko.platform.db.session import in_thread_session
from mko.platform.settings import Settings
from mko.power.base import NodeOutcome, NodeSnapshot, OutcomeState, WakeSchedule

__all__ = ["RemoteWake", "wake_remote"]

log = logging.getLogger("mko.agents")


# How often a waiting operation re-reads its jobs, and a waiting claim the queue, when no in-process
# signal arrives (another process queued or reported: the CLI, or a second server sharing PostgreSQL).
JOB_POLL = 0.2


@dataclass
class RemoteWake:
    """The nodes of one site in one wake: their job, or why none could be queued."""

    site: str
    nodes: list[NodeSnapshot]
    job_id: int | None = None
    error: str | None = None
    agent: str | None = None
    outcomes: dict[int, NodeOutcome] = field(default_factory=dict)

    def notes(self) -> dict[int, dict[str, Any]]:
        """Per node: where its outcome came from, for the operation's steps."""
        note = {"site": self.site, "agent": self.agent, "wake_job_id": self.job_id}
        return {node.node_id: dict(note) for node in self.nodes}


def _queue(
    session: Session,
    settings: Settings,
    operation_id: int,
    groups: dict[str, list[NodeSnapshot]],
    schedule: WakeSchedule,
) -> list[RemoteWake]:
    """One job per site that has a live agent; the others fail at once."""
    parts = []
    expires = utcnow() + timedelta(seconds=schedule.timeout + settings.agent_offline_after)
    for site, nodes in sorted(groups.items()):
        part = RemoteWake(site, nodes)
        if not live_agents(session, site, settings):
            part.error = f"no live agent for site {site}"
        else:
            job = WakeJob(
                operation_id=operation_id,
                site=site,
                status=WakeJobStatus.QUEUED,
                node_ids=[n.node_id for n in nodes],
                nodes=[node_payload(n) for n in nodes],
                schedule=schedule.as_dict()
                | {"probe_interval": schedule.probe_interval, "probe_timeout": schedule.probe_timeout},
                expires_at=expires,
            )
            session.add(job)
            session.flush()
            part.job_id = job.id
        parts.append(part)
    if session.get_bind().dialect.name == "postgresql" and any(p.job_id for p in parts):
        # Delivered on commit to every server LISTENing, so their waiting claims answer at once.
        session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
    session.commit()
    jobs_queued.ring()
    for part in parts:
        if part.job_id is not None:
            log.info("operation %s: wake job %s queued for site %s", operation_id, part.job_id, part.site)
        else:
            log.warning("operation %s: %s (%d node(s) fail)", operation_id, part.error, len(part.nodes))
    return parts


def _finish_job(session: Session, job: WakeJob, error: str) -> None:
    """Give a job up (only if still open): it will not be claimed, and a late report is refused."""
    result = session.execute(
        update(WakeJob)
        .where(WakeJob.id == job.id, WakeJob.status.in_([WakeJobStatus.QUEUED, WakeJobStatus.CLAIMED]))
        .values(status=WakeJobStatus.FAILED, error=error, finished_at=utcnow())
    )
    session.commit()
    if getattr(result, "rowcount", 0):
        log.warning("wake job %s given up: %s", job.id, error)
    session.refresh(job)


def _failed(node: NodeSnapshot, message: str) -> NodeOutcome:
    return NodeOutcome(node.node_id, node.hostname, node.method, state=OutcomeState.FAILED, error=message)


def _outcomes_of(job: WakeJob, part: RemoteWake) -> dict[int, NodeOutcome]:
    """Per-node outcomes of a finished job: the agent's report, or its error for every node."""
    if job.status == WakeJobStatus.FAILED or not job.result:
        reason = job.error or "the agent reported no result"
        return {n.node_id: _failed(n, reason) for n in part.nodes}
    reported = {int(r["node_id"]): r for r in job.result.get("nodes", [])}
    outcomes = {}
    for node in part.nodes:
        data = reported.get(node.node_id)
        if data is None:
            outcomes[node.node_id] = _failed(node, f"agent {job.claimed_by} reported nothing for this node")
            continue
        outcomes[node.node_id] = NodeOutcome(
            node.node_id,
            node.hostname,
            node.method,
            state=OutcomeState(data["state"]),
            attempts=int(data.get("attempts") or 0),
            first_sent_after=data.get("first_sent_after"),
            up_after=data.get("up_after"),
            error=data.get("error"),
            verified_by=data.get("verified_by"),
        )
    return outcomes


def _check_job(session: Session, settings: Settings, part: RemoteWake) -> bool:
    """Read a job; give it up if it can no longer finish. True once it is done or failed."""
    assert part.job_id is not None
    job = session.get_one(WakeJob, part.job_id)
    if job.status == WakeJobStatus.QUEUED and utcnow() >= job.expires_at:
        _finish_job(session, job, f"no agent of site {part.site} took the job before the timeout")
    elif job.status == WakeJobStatus.QUEUED and not live_agents(session, part.site, settings):
        _finish_job(session, job, f"no live agent for site {part.site}")
    elif job.status == WakeJobStatus.CLAIMED:
        agent = session.scalars(select(Agent).where(Agent.name == job.claimed_by)).first()
        if agent is None or not is_online(agent, settings):
            _finish_job(
                session, job, f"agent {job.claimed_by} of site {part.site} went silent during the job"
            )
        elif utcnow() >= job.expires_at:
            _finish_job(session, job, f"agent {job.claimed_by} did not report before the timeout")
    part.agent = job.claimed_by
    if job.status in (WakeJobStatus.DONE, WakeJobStatus.FAILED):
        part.outcomes = _outcomes_of(job, part)
        return True
    return False


async def wake_remote(
    session_factory: sessionmaker[Session],
    settings: Settings,
    operation_id: int,
    groups: dict[str, list[NodeSnapshot]],
    schedule: WakeSchedule,
    on_event: Callable[[str, NodeOutcome], None] | None = None,
) -> list[RemoteWake]:
    """Queue a job per site, wait until each is reported or given up; every node gets an outcome."""
    notify = on_event or (lambda _kind, _outcome: None)
    # Database work in worker threads: a server runs this on its event loop, beside requests.
    parts = await in_thread_session(
        session_factory, lambda session: _queue(session, settings, operation_id, groups, schedule)
    )
    for part in parts:
        if part.error is not None:
            part.outcomes = {n.node_id: _failed(n, part.error) for n in part.nodes}
            for outcome in part.outcomes.values():
                notify("failed", outcome)
    pending = [p for p in parts if p.job_id is not None]

    def check(session: Session) -> list[RemoteWake]:
        return [part for part in pending if _check_job(session, settings, part)]

    try:
        while pending:
            for part in await in_thread_session(session_factory, check):
                pending.remove(part)
                for outcome in part.outcomes.values():
                    notify(outcome.state.value, outcome)
            if pending:
                await jobs_reported.wait(JOB_POLL)
    except BaseException:
        # Cancelled (the server stops, the wake is cancelled): no agent may start these jobs any more.
        # Done here, not in a worker thread: the task must record this before it ends.
        with session_factory() as session:
            for part in pending:
                job = session.get(WakeJob, part.job_id)
                if job is not None:
                    _finish_job(session, job, "the wake was cancelled")
        raise
    return parts
