"""Wake agents: magic packets for nodes in other broadcast domains, sent by an agent on their LAN.

Magic packets do not cross routers. A node (or its cluster) with a ``site`` is woken by that site's
agents (``mko agent --site NAME``, see :mod:`mko.wake_agent`), small always-on machines on the node's
LAN that talk to the orchestrator's API with a token of role ``agent``:

* a wake (:func:`mko.wake.run_wake`) queues one :class:`~mko.platform.db.models.agents.WakeJob` per site
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

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mko.access.principal import Principal
from mko.platform import validation
from mko.platform.db.models.access import ApiToken, Role
from mko.platform.db.models.agents import Agent, WakeJob, WakeJobStatus
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node, NodeRole, WolMethod
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import in_thread_session
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.secrets import SecretBox
from mko.platform.settings import Settings
from mko.platform.validation import InputModel
from mko.power.base import NodeOutcome, NodeSnapshot, OutcomeState, WakeSchedule

__all__ = [
    "AGENT_METHODS",
    "AgentHeartbeat",
    "AgentPublic",
    "ClaimRequest",
    "JobReport",
    "RemoteWake",
    "claim_job",
    "claim_wait",
    "heartbeat",
    "list_agents",
    "live_agents",
    "report_job",
    "routed_to_agent",
    "snapshot_from_payload",
    "split_by_site",
    "wake_remote",
]

log = logging.getLogger("mko.agents")

AGENT_METHODS = frozenset({WolMethod.ETHERNET, WolMethod.ETHERNET_RAW})
NOTIFY_CHANNEL = "mko_wake_jobs"
# How often a waiting operation re-reads its jobs, and a waiting claim the queue, when no in-process
# signal arrives (another process queued or reported: the CLI, or a second server sharing PostgreSQL).
JOB_POLL = 0.2
CLAIM_POLL = 0.25
_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")


# ---------------------------------------------------------------- in-process signals


class Doorbell:
    """Wakes coroutines (on any event loop) waiting for something another thread or task did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def ring(self) -> None:
        """Wake every current waiter; callable from any thread."""
        with self._lock:
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, timeout: float) -> None:
        """Return after a ring or ``timeout`` seconds, whichever is first."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            self._waiters.add(entry)
        try:
            async with asyncio.timeout(max(timeout, 0)):  # not wait_for: it can swallow a cancellation
                await future
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(entry)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


#: Rung when a job is queued (claims answer at once) and when one is reported (wakes finish at once).
jobs_queued = Doorbell()
jobs_reported = Doorbell()


# ---------------------------------------------------------------- API models


class AgentHeartbeat(InputModel):
    """An agent saying it is alive, and where."""

    name: str = Field(min_length=1, max_length=100, description="the agent's name (default: its hostname)")
    site: str = Field(min_length=1, max_length=64, description="the site whose nodes it wakes")
    host: str = Field(default="", max_length=253, description="the machine it runs on")
    version: str = Field(default="", max_length=50)


class ClaimRequest(InputModel):
    """A claim: hand me a queued job of my site, waiting up to ``wait`` seconds for one."""

    name: str = Field(min_length=1, max_length=100)
    wait: float = Field(default=20.0, ge=0, le=120, description="long poll: seconds to wait for a job")


class ReportedOutcome(InputModel):
    """What happened to one node of a job, as the agent saw it."""

    model_config = ConfigDict(extra="ignore")

    node_id: int
    state: Literal["sent", "up", "not_up", "failed"]
    attempts: int = Field(default=0, ge=0)
    first_sent_after: float | None = None
    up_after: float | None = None
    error: str | None = Field(default=None, max_length=1000)
    verified_by: str | None = Field(default=None, max_length=100)


class JobReport(InputModel):
    """The result of a claimed job: one outcome per node, or an error for the whole job."""

    name: str = Field(min_length=1, max_length=100)
    nodes: list[ReportedOutcome] = []
    error: str | None = Field(default=None, max_length=1000)


class AgentPublic(BaseModel):
    """An agent as shown to people."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    site: str
    host: str
    version: str
    online: bool = False
    last_heartbeat_at: datetime
    seconds_since_heartbeat: float = 0.0
    registered_at: datetime


# ---------------------------------------------------------------- agents


def _check_name(name: str) -> str:
    if not _AGENT_NAME.fullmatch(name):
        raise InputError(
            "name", f"{validation.quoted(name)} is not an agent name (letters, digits, . _ - @; at most 100)"
        )
    return name


def _check_site(site: str) -> str:
    checked = validation.validate_site(site, "site")
    if checked is None or checked == "local":
        raise InputError("site", "name the site this agent serves (not empty, not 'local')")
    return checked


def is_online(agent: Agent, settings: Settings, now: datetime | None = None) -> bool:
    """Whether the agent's last heartbeat is recent enough."""
    now = now or utcnow()
    return now - agent.last_heartbeat_at <= timedelta(seconds=settings.agent_offline_after)


def live_agents(session: Session, site: str, settings: Settings) -> list[Agent]:
    """The agents of ``site`` heard from within ``agent_offline_after`` seconds."""
    since = utcnow() - timedelta(seconds=settings.agent_offline_after)
    query = select(Agent).where(Agent.site == site, Agent.last_heartbeat_at >= since).order_by(Agent.name)
    return list(session.scalars(query))


def list_agents(session: Session, settings: Settings) -> list[AgentPublic]:
    """Every agent with online/offline and the age of its last heartbeat."""
    now = utcnow()
    result = []
    for agent in session.scalars(select(Agent).order_by(Agent.site, Agent.name)):
        public = AgentPublic.model_validate(agent)
        public.online = is_online(agent, settings, now)
        public.seconds_since_heartbeat = round((now - agent.last_heartbeat_at).total_seconds(), 1)
        result.append(public)
    return result


def _token_id(session: Session, principal: Principal) -> int | None:
    if principal.kind != "token":
        return None
    return session.scalar(select(ApiToken.id).where(ApiToken.name == principal.name))


def _token_valid(session: Session, token_id: int | None) -> bool:
    if token_id is None:
        return False
    token = session.get(ApiToken, token_id)
    now = utcnow()
    return (
        token is not None
        and token.revoked_at is None
        and (token.expires_at is None or token.expires_at > now)
    )


def heartbeat(session: Session, principal: Principal, data: AgentHeartbeat) -> Agent:
    """Register or refresh an agent; refused: a name another valid token holds, or a token's second site."""
    name, site = _check_name(data.name), _check_site(data.site)
    token_id = _token_id(session, principal)
    if principal.role == Role.AGENT and token_id is not None:
        # A token serves the one site it first registered for: a stolen or misconfigured token of one
        # site never receives another site's MACs and SecureOn passwords.
        bound = session.scalars(
            select(Agent.site).where(Agent.token_id == token_id, Agent.site != site)
        ).first()
        if bound is not None:
            raise ConflictError(
                f"this agent token serves site {bound!r}; create another token for site {site!r}"
            )
    agent = session.scalars(select(Agent).where(Agent.name == name)).first()
    now = utcnow()
    if agent is None:
        agent = Agent(name=name, site=site, token_id=token_id, registered_at=now)
        session.add(agent)
        log.info("agent %s registered for site %s by %s", name, site, principal.actor_name)
    else:
        if agent.token_id != token_id and _token_valid(session, agent.token_id):
            raise ConflictError(f"agent name {name!r} is registered with another token")
        if agent.site != site:
            log.info("agent %s moved from site %s to %s", name, agent.site, site)
        agent.site, agent.token_id = site, token_id
    agent.host, agent.version, agent.last_heartbeat_at = data.host, data.version, now
    try:
        session.commit()
    except IntegrityError:  # two first heartbeats of one name at once: the other one won
        session.rollback()
        raise ConflictError(f"agent {name!r} registered concurrently; send the heartbeat again") from None
    return agent


def _agent_of(session: Session, principal: Principal, name: str) -> Agent:
    """The calling agent's row (registered by a heartbeat, with this token), refreshed as alive."""
    agent = session.scalars(select(Agent).where(Agent.name == name)).first()
    if agent is None:
        raise NotFoundError("agent", name)
    if agent.token_id != _token_id(session, principal) and _token_valid(session, agent.token_id):
        raise ConflictError(f"agent name {name!r} is registered with another token")
    return agent


# ---------------------------------------------------------------- queueing and waiting (orchestrator)


def routed_to_agent(node: NodeSnapshot) -> bool:
    """Whether the node's magic packets are sent by its site's agent rather than by us."""
    return node.site is not None and node.method in AGENT_METHODS


def split_by_site(nodes: Sequence[NodeSnapshot]) -> tuple[list[NodeSnapshot], dict[str, list[NodeSnapshot]]]:
    """Local nodes, and the others grouped by site."""
    local: list[NodeSnapshot] = []
    remote: dict[str, list[NodeSnapshot]] = {}
    for node in nodes:
        if routed_to_agent(node):
            assert node.site is not None
            remote.setdefault(node.site, []).append(node)
        else:
            local.append(node)
    return local, remote


def node_payload(node: NodeSnapshot) -> dict[str, Any]:
    """What an agent needs to wake and probe one node (the SecureOn password only as a flag)."""
    return {
        "node_id": node.node_id,
        "hostname": node.hostname,
        "ip_address": node.ip_address,
        "role": node.role.value,
        "method": node.method.value,
        "probe_port": node.probe_port,
        "mac": node.mac,
        "wol_port": node.wol_port,
        "broadcast": node.broadcast,
        "prefix_len": node.prefix_len,
        "interface": node.interface,
        "secureon": node.has_secureon,
    }


def snapshot_from_payload(data: dict[str, Any], site: str | None = None) -> NodeSnapshot:
    """The NodeSnapshot an agent wakes, from a claimed job's node entry."""
    secureon = data.get("secureon")
    return NodeSnapshot(
        node_id=int(data["node_id"]),
        hostname=str(data["hostname"]),
        ip_address=str(data["ip_address"]),
        role=NodeRole(data["role"]),
        method=WolMethod(data["method"]),
        probe_port=int(data["probe_port"]),
        mac=data.get("mac"),
        wol_port=int(data.get("wol_port") or 9),
        broadcast=data.get("broadcast"),
        prefix_len=data.get("prefix_len"),
        interface=data.get("interface"),
        secureon=secureon if isinstance(secureon, str) else None,
        site=site,
    )


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
    return NodeOutcome(
        node.node_id, node.hostname, node.method.value, state=OutcomeState.FAILED, error=message
    )


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
            node.method.value,
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


# ---------------------------------------------------------------- claiming and reporting (agents)


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
            stored = node.wol_secureon_encrypted if node is not None else None
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


_listeners: dict[int, threading.Thread] = {}
_listeners_lock = threading.Lock()


def _listen_for_jobs(session_factory: sessionmaker[Session]) -> None:
    """On PostgreSQL, LISTEN for jobs queued by other processes (a CLI wake, another server) so waiting
    claims answer at once rather than at their next poll; one thread per engine, for the process's life."""
    engine = session_factory.kw.get("bind")
    if engine is None or engine.dialect.name != "postgresql":
        return
    with _listeners_lock:
        if id(engine) in _listeners:
            return
        thread = threading.Thread(target=_listen, args=(engine,), name="mko-agent-jobs-listen", daemon=True)
        _listeners[id(engine)] = thread
    thread.start()


def _listen(engine: Any) -> None:
    while True:
        driver = None
        try:
            # A connection of its own for good: detached from the pool, in autocommit for LISTEN.
            raw = engine.raw_connection()
            driver = raw.driver_connection
            raw.detach()
            driver.rollback()  # the pool's pre-ping may have opened a transaction
            driver.autocommit = True
            driver.execute(f"LISTEN {NOTIFY_CHANNEL}")
            for _notify in driver.notifies():
                jobs_queued.ring()
        except Exception as exc:  # the database restarted or went away: listen again shortly
            log.info("listening for queued wake jobs stopped (%s); polling until it is back", exc)
        finally:
            if driver is not None:
                with contextlib.suppress(Exception):
                    driver.close()  # a dropped connection left open would only be closed by the GC
        time.sleep(5.0)


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
