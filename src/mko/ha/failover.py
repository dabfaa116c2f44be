"""Failover: what the leader does with operations that instances which stopped or died left running.

Every operation records the serve instance running it (``operations.instance``, see mko.ha). The
leader (:func:`take_over`, at election and then every few seconds) looks for RUNNING or PENDING
operations that are **orphaned**: their instance is dead (no PostgreSQL session and no heartbeat for
``ha_dead_after``), or they are leader duties (actor ``rule:…`` / ``schedule:…``) of an instance that is
no longer the leader and has had time to fence itself. It claims each one with a conditional UPDATE (so
only one instance ever does), then:

* a **wake** (packets and probes: repeating them is harmless) is re-run to completion under the SAME
  operation, with a step and ``result.resumed`` saying which instance it was taken over from;
* a **power rule** execution goes back to the rule engine: one still waiting its delay waits the rest of
  it; a running wake_on_lan resumes its wake (and then its recovery); an action that cannot be repeated
  (a shutdown: a node must never be powered off twice) is finished as failed;
* anything else (shutdowns, recoveries, configuration) is finished as **failed** with the reason
  "interrupted by failover on <instance>", and is never run again.

Operations started by CLI commands carry no instance and are never touched here: like every operation
they record their owning process (mko.operations.ownership), and are closed as interrupted once it is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mko.ha.election import live_instance_ids
from mko.operations.interrupted import OPEN, fail_interrupted
from mko.operations.kinds import WAKE_KIND_PREFIX
from mko.operations.ownership import keep_alive, this_process
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.ha import Instance
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.settings import Settings
from mko.wol.wake import resume_wake

__all__ = ["RESUMABLE_KIND_PREFIX", "Adopter", "claim", "orphaned_operations", "take_over"]

log = logging.getLogger("mko.failover")


RESUMABLE_KIND_PREFIX = WAKE_KIND_PREFIX


LEADER_DUTY_ACTORS = ("rule:", "schedule:")


Spawn = Callable[[Coroutine[Any, Any, Any]], Any]


class Adopter(Protocol):
    """What carries on a rule execution a dead instance left (the rule engine, handed in by mko.wiring)."""

    def adopt(self, session: Session, operation_id: int, previous: str) -> None:
        """Take over the execution recorded as ``operation_id``, last run by ``previous``."""


def orphaned_operations(
    session: Session, settings: Settings, me: str, leader_since: datetime, *, now: datetime | None = None
) -> list[Operation]:
    """Open operations of dead instances, and leader duties of instances that are no longer the leader."""
    now = now or utcnow()
    live = live_instance_ids(session)
    instances = {row.name: row for row in session.scalars(select(Instance))}
    stale = timedelta(seconds=settings.ha_dead_after)
    # The old leader fences itself within one check; give it that before taking its duties while it lives.
    fence_grace = timedelta(seconds=settings.ha_check_interval + settings.ha_check_timeout + 0.5)
    found = []
    query = (
        select(Operation)
        .where(Operation.status.in_(OPEN), Operation.instance.is_not(None), Operation.instance != me)
        .order_by(Operation.id)
    )
    for operation in session.scalars(query):
        owner = instances.get(operation.instance or "")
        if owner is None:
            continue
        silent = now - owner.heartbeat_at > stale
        dead = owner.stopped_at is not None or (silent and (live is None or owner.id not in live))
        duty = operation.actor.startswith(LEADER_DUTY_ACTORS)
        if dead or (duty and now - leader_since > fence_grace):
            found.append(operation)
    return found


def claim(session: Session, operation_id: int, owner: str, me: str) -> bool:
    """Take an operation over from ``owner``; False when someone else already did (or it ended).

    This process becomes its owner (mko.operations.ownership) and heartbeats it from now on.
    """
    process = this_process()
    result = session.execute(
        update(Operation)
        .where(Operation.id == operation_id, Operation.instance == owner, Operation.status.in_(OPEN))
        .values(
            instance=me,
            owner_host=process.host,
            owner_pid=process.pid,
            owner_start=process.start,
            heartbeat_at=utcnow(),
        )
    )
    session.commit()
    claimed = bool(getattr(result, "rowcount", 0) == 1)
    if claimed:
        keep_alive(session)
    return claimed


def _linked_ids(rule_operations: list[Operation]) -> set[int]:
    """The action operations (wake, recovery) rule executions noted on their steps."""
    return {
        step.detail[key]
        for operation in rule_operations
        for step in operation.steps
        for key in ("operation_id", "recovery_operation_id")
        if isinstance(step.detail.get(key), int)
    }


async def take_over(
    session_factory: sessionmaker[Session],
    settings: Settings,
    me: str,
    leader_since: datetime,
    *,
    engine: Adopter | None,
    spawn: Spawn,
) -> list[int]:
    """Claim the orphaned operations and resume or fail each (see the module docstring); their ids."""
    from mko.operations.kinds import RULE_OPERATION_KIND

    handled: list[int] = []
    with session_factory() as session:
        orphans = orphaned_operations(session, settings, me, leader_since)
        owners = {o.id: o.instance or "" for o in orphans}
        rule_ops = [o for o in orphans if o.kind == RULE_OPERATION_KIND]
        # The wakes and recoveries a rule execution started are resumed by that execution.
        linked = _linked_ids(rule_ops)
        others = [o for o in orphans if o.kind != RULE_OPERATION_KIND and o.id not in linked]
        linked_owned = [o for o in orphans if o.id in linked]
    for operation in rule_ops:
        with session_factory() as session:
            if not claim(session, operation.id, owners[operation.id], me):
                continue
            for other in linked_owned:
                claim(session, other.id, owners[other.id], me)
            if engine is None:
                fail_interrupted(session, session.get_one(Operation, operation.id), owners[operation.id])
            else:
                engine.adopt(session, operation.id, owners[operation.id])
        handled.append(operation.id)
    for operation in others:
        owner = owners[operation.id]
        with session_factory() as session:
            if not claim(session, operation.id, owner, me):
                continue
            current = session.get_one(Operation, operation.id)
            if current.kind.startswith(RESUMABLE_KIND_PREFIX) and current.status == OperationStatus.RUNNING:
                spawn(resume_wake(session_factory, settings, operation.id, owner, me))
            else:
                fail_interrupted(session, current, owner)
        handled.append(operation.id)
    if handled:
        log.warning("took over %d operation(s) of stopped instances: %s", len(handled), handled)
    return handled
