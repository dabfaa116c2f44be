"""Is each node up right now? Concurrent TCP probes of the nodes' probe ports, on demand or in the background.

The background :class:`Refresher` (started by ``mko serve`` every ``reachability_interval`` seconds) stores
each node's last result on the node itself (``reachable``, ``reachability_checked_at``,
``reachability_changed_at``), so status pages, the CLI and ``/metrics`` all read the same, current state.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mko.inventory.read import NodeFilters, check_cluster
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.session import in_thread_session
from mko.power.probe import probe_many

__all__ = [
    "Reachability",
    "Refresher",
    "probe_and_record",
    "probe_concurrency",
    "probe_nodes",
    "record_reachability",
    "stored_reachability",
]

log = logging.getLogger("mko.reachability")


class Reachability(BaseModel):
    """One node's probe result (``up`` None: never probed), and when it was taken; ``state`` is what
    the dashboard shows (off, booting, up, Ready, unknown: :mod:`mko.wol.node_state`),
    ``state_note`` what it rests on, and ``wake_*`` its last wake's operation and outcome."""

    up: bool | None
    port: int
    latency_ms: float | None = None
    error: str | None = None
    checked_at: datetime | None = None
    age_seconds: float | None = None
    state: str | None = None
    state_note: str | None = None
    wake_operation_id: int | None = None
    wake_state: str | None = None


def probe_concurrency() -> int:
    """Probes in flight at once: up to 2,048, but at most half the process's file-descriptor limit."""
    # NOTE: every connection in flight holds a descriptor; with the common soft limit of 1,024 more
    # than ~900 probes at once would fail with EMFILE and report healthy nodes as down.
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 2048
    return max(64, min(2048, soft // 2))


async def probe_nodes(
    nodes: Sequence[Node], timeout: float, concurrency: int | None = None
) -> dict[int, Reachability]:
    """Probe all ``nodes`` at once (see :func:`probe_concurrency`); keyed by node id."""
    targets = {node.id: (node.ip_address, node.probe_port or node.ssh_port) for node in nodes}
    results = await probe_many(targets.values(), timeout, concurrency or probe_concurrency())
    answer = {}
    for node_id, target in targets.items():
        result = results[target]
        answer[node_id] = Reachability(
            up=result.ok,
            port=target[1],
            latency_ms=round(result.latency * 1000, 1) if result.ok else None,
            error=result.error,
        )
    return answer


def stored_reachability(
    session: Session, filters: NodeFilters, node_ids: Collection[int] = ()
) -> dict[int, Reachability]:
    """What the last probes found (the refresher's, or an operator's refresh), with their age, for the
    nodes the filters match (only ``node_ids`` when given): one query of five columns, no probe."""
    check_cluster(session, filters)
    query = select(
        Node.id, Node.reachable, Node.reachability_checked_at, Node.probe_port, Node.ssh_port
    ).where(*filters.clauses())
    if node_ids:
        query = query.where(Node.id.in_(sorted(set(node_ids))))
    now = utcnow()
    return {
        node_id: Reachability(
            up=reachable if checked_at is not None else None,
            port=probe_port or ssh_port,
            checked_at=checked_at,
            age_seconds=None if checked_at is None else round((now - checked_at).total_seconds(), 1),
        )
        for node_id, reachable, checked_at, probe_port, ssh_port in session.execute(query.order_by(Node.id))
    }


async def probe_and_record(
    sessions: sessionmaker[Session], nodes: Sequence[Node], timeout: float
) -> dict[int, Reachability]:
    """Probe ``nodes`` now and store the results on them (in a worker thread), as the refresher does."""
    results = await probe_nodes(nodes, timeout)
    now = utcnow()
    await in_thread_session(sessions, lambda session: record_reachability(session, results, now))
    return {node_id: result.model_copy(update={"checked_at": now}) for node_id, result in results.items()}


# ------------------------------------------------------------------ the background refresher


def record_reachability(session: Session, results: Mapping[int, Reachability], now: datetime) -> int:
    """Store probe results on the nodes (two bulk updates plus one per state change); the changes count."""
    if not results:
        return 0
    current = dict(session.execute(select(Node.id, Node.reachable).where(Node.id.in_(results))).all())
    changed = {
        up: [i for i, known in current.items() if results[i].up == up and known != up] for up in (True, False)
    }
    for up, ids in changed.items():
        if ids:
            session.execute(
                update(Node).where(Node.id.in_(ids)).values(reachable=up, reachability_changed_at=now)
            )
    session.execute(update(Node).where(Node.id.in_(current)).values(reachability_checked_at=now))
    session.commit()
    return sum(len(ids) for ids in changed.values())


class Refresher:
    """Probes every node every ``interval`` seconds and stores the result, for status pages and /metrics."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        interval: float,
        timeout: float,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.session_factory = session_factory
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self.last_refresh: datetime | None = None
        self.last_duration: float | None = None

    async def refresh(self) -> dict[int, Reachability]:
        """Probe every node once and store the results."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Database work in worker threads: this loop shares the server's event loop with requests.
        nodes = await in_thread_session(
            self.session_factory, lambda session: list(session.scalars(select(Node).order_by(Node.id)))
        )
        results = await probe_nodes(nodes, self.timeout)
        now = self.clock()
        changed = await in_thread_session(
            self.session_factory, lambda session: record_reachability(session, results, now)
        )
        self.last_refresh, self.last_duration = now, loop.time() - started
        if changed:
            log.info("reachability: %d of %d node(s) changed state", changed, len(results))
        return results

    async def run(self) -> None:
        """Refresh now, then every ``interval`` seconds, forever; a failed pass is logged and retried."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("reachability refresh failed")
            await self.sleep(self.interval)
