"""Schedules: cron expressions in a time zone that wake a node or a cluster, or shut a cluster down.

Semantics, in the order the scheduler applies them:

* times are the cron expression's wall-clock times in the schedule's IANA time zone; a time that does
  not exist (clocks go forward) runs at the first minute after the jump, a time that happens twice
  (clocks go back) runs once;
* the scheduler runs inside ``mko serve``; a run found late by up to ``schedule_misfire_grace`` seconds
  (a busy or just-restarted server) still runs; runs older than that (the server was down) are
  **reported** as one ``schedule_missed`` operation and notification, never replayed;
* a run never starts while another operation on the same cluster (or node) is running: it is recorded
  as a cancelled ``schedule_<action>`` operation naming the operation in the way, and notified;
* a scheduled wake first probes every target node and wakes only those that do not answer, through the
  normal wake service with actor ``schedule:<id>``;
* every run is an operation (``schedule_wake``, target the schedule's node or cluster) whose steps say
  which nodes were already up and which wake operation woke the rest.

Actions are dispatched through the static table ``mko.schedules.actions.RUNNERS``: a wake, and the
cluster shutdown (a ``schedule_shutdown`` operation linking the ordered ``cluster_shutdown`` it ran).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.inventory.clusters import get_cluster
from mko.inventory.nodes import get_node, list_nodes
from mko.notify.messages import schedule_failed
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.schedules import Schedule
from mko.platform.settings import Settings
from mko.schedules.actions import RUNNERS, PreparedRun, RunContext
from mko.schedules.cron import _latest_run, runs_between
from mko.schedules.service import _target_label, running_conflict

__all__ = ["Scheduler"]

log = logging.getLogger("mko.schedules")


MISSED_CAP = 1000  # runs listed one by one in a missed-run report; more are counted as "more than"


Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


@dataclass
class _Due:
    run_at: datetime | None = None
    missed: list[datetime] = field(default_factory=list)
    more_missed: bool = False


class Scheduler:
    """Runs the schedules of one database; ``clock`` and ``sleep`` are injectable so tests control time."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        spawn: Spawn | None = None,
    ) -> None:
        self.context = RunContext(session_factory, settings)
        self.clock = clock
        self.sleep = sleep
        self.tasks: set[asyncio.Task[Any]] = set()
        self._spawn = spawn or self._keep
        self._changed: asyncio.Event | None = None

    def _keep(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def poke(self) -> None:
        """Re-read the schedules now (after one was added, paused or resumed)."""
        if self._changed is not None:
            self._changed.set()

    # -------------------------------------------------------------- one pass

    def _due(self, schedule: Schedule, now: datetime) -> _Due:
        zone = ZoneInfo(schedule.timezone)
        runs = runs_between(schedule.cron, zone, schedule.last_checked_at, until=now, limit=MISSED_CAP + 1)
        due = _Due()
        if not runs:
            return due
        if len(runs) > MISSED_CAP:
            due.more_missed = True
            runs = [*runs[:MISSED_CAP], _latest_run(schedule.cron, zone, now)]
        *earlier, latest = runs
        due.missed = earlier
        if (now - latest).total_seconds() <= self.context.settings.schedule_misfire_grace:
            due.run_at = latest
        else:
            due.missed.append(latest)
        return due

    async def tick(self) -> list[asyncio.Task[Operation]]:
        """Handle every run due by now: start it (returns the running tasks) or report it missed."""
        # The database part in a worker thread: the scheduler shares the server's event loop.
        prepared = await anyio.to_thread.run_sync(self._due_runs, self.clock())
        return [self._spawn(self._execute(run)) for run in prepared]

    def _due_runs(self, now: datetime) -> list[PreparedRun]:
        """Record the runs due by ``now`` (and report missed ones); the runs to start."""
        fired: list[tuple[int, datetime]] = []
        with self.context.session_factory() as session:
            query = select(Schedule).where(Schedule.enabled.is_(True)).order_by(Schedule.id)
            for schedule in session.scalars(query).all():
                try:
                    due = self._due(schedule, now)
                except Exception:  # a broken row must not stop the other schedules
                    log.exception("schedule %s: cannot compute its runs", schedule.id)
                    continue
                if not due.missed and due.run_at is None:
                    continue  # nothing due: no write (the next pass looks from the same instant)
                # Handled first, reported second: a crash in between never reports or runs twice.
                schedule.last_checked_at = now
                if due.run_at is not None:
                    schedule.last_run_at = due.run_at
                    fired.append((schedule.id, due.run_at))
                session.commit()
                if due.missed:
                    self._report_missed(session, schedule, due, now)
            runs = []
            # One at a time: each run's operation exists before the next run checks for conflicts.
            for schedule_id, run_at in fired:
                try:
                    prepared = self._prepare(session, schedule_id, run_at, now)
                except Exception:
                    log.exception("schedule %s: cannot start its run", schedule_id)
                    session.rollback()
                    continue
                if prepared is not None:
                    runs.append(prepared)
        return runs

    def next_due(self, now: datetime) -> datetime | None:
        """The earliest next run of any enabled schedule."""
        with self.context.session_factory() as session:
            found = None
            for schedule in session.scalars(select(Schedule).where(Schedule.enabled.is_(True))).all():
                try:
                    runs = runs_between(
                        schedule.cron,
                        ZoneInfo(schedule.timezone),
                        max(now, schedule.last_checked_at),
                        limit=1,
                    )
                except Exception:  # reported by tick(); it must not stop the loop's sleep computation
                    log.debug("schedule %s: cannot compute its next run", schedule.id, exc_info=True)
                    continue
                if runs and (found is None or runs[0] < found):
                    found = runs[0]
            return found

    def _report_missed(self, session: Session, schedule: Schedule, due: _Due, now: datetime) -> None:
        count = f"more than {MISSED_CAP}" if due.more_missed else str(len(due.missed))
        first, last = due.missed[0], due.missed[-1]
        zone = ZoneInfo(schedule.timezone)

        def local(moment: datetime) -> str:
            return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")

        span = local(first) if first == last else f"{local(first)} … {local(last)}"
        operation = start_operation(
            session,
            kind="schedule_missed",
            target_type="cluster" if schedule.cluster_id is not None else "node",
            target_id=schedule.cluster_id if schedule.cluster_id is not None else schedule.node_id,
            actor=Actor(name=f"schedule:{schedule.id}", source="scheduler"),
            parameters=self._parameters(session, schedule, due.missed[-1], now)
            | {"missed": [m.isoformat() for m in due.missed[:50]], "missed_count": count},
            summary="",
        )
        summary = f"missed {count} run(s) while mko was not running ({span}); not replayed"
        finish_operation(session, operation, status=OperationStatus.CANCELLED, summary=summary)
        log.warning("schedule %s %r: %s", schedule.id, schedule.name, summary)
        schedule.last_operation_id, schedule.last_status = operation.id, operation.status
        session.commit()
        schedule_failed(self.context.settings, schedule, operation)

    def _parameters(
        self, session: Session, schedule: Schedule, run_at: datetime, now: datetime
    ) -> dict[str, Any]:
        cluster_name = ""
        if schedule.cluster_id is not None:
            cluster_name = get_cluster(session, schedule.cluster_id).name
        elif schedule.node_id is not None:
            node = session.get(Node, schedule.node_id)
            cluster_name = node.cluster.name if node is not None and node.cluster is not None else ""
        return {
            "schedule_id": schedule.id,
            "schedule": schedule.name,
            "action": schedule.action.value,
            "cron": schedule.cron,
            "timezone": schedule.timezone,
            "scheduled_for": run_at.isoformat(),
            "fired_at": now.isoformat(),
            "target_name": _target_label(session, schedule),
            "cluster": cluster_name,
        } | schedule.options

    def _prepare(
        self, session: Session, schedule_id: int, run_at: datetime, now: datetime
    ) -> PreparedRun | None:
        """Record the run's operation, or a cancelled one when it cannot start; None when not started."""
        schedule = session.get_one(Schedule, schedule_id)
        if schedule.cluster_id is not None:
            cluster_id: int | None = schedule.cluster_id
            node_ids = [n.id for n in list_nodes(session, schedule.cluster_id)]
        else:
            node = get_node(session, schedule.node_id or 0)
            cluster_id, node_ids = node.cluster_id, [node.id]
        actor = Actor(name=f"schedule:{schedule.id}", source="scheduler")
        conflict = running_conflict(session, cluster_id, node_ids)
        operation = start_operation(
            session,
            kind=f"schedule_{schedule.action.value}",
            target_type="cluster" if schedule.cluster_id is not None else "node",
            target_id=schedule.cluster_id if schedule.cluster_id is not None else schedule.node_id,
            actor=actor,
            parameters=self._parameters(session, schedule, run_at, now),
            summary=f"scheduled {schedule.action.value} ({schedule.name})",
        )
        refusal = None
        if conflict is not None:
            scope = f"cluster #{cluster_id}" if cluster_id is not None else f"node #{node_ids[0]}"
            refusal = (
                OperationStatus.CANCELLED,
                f"not started: operation #{conflict.id} ({conflict.kind}) is running on {scope}",
            )
        elif not node_ids:
            refusal = (OperationStatus.FAILED, f"cluster #{cluster_id} has no nodes")
        schedule.last_operation_id = operation.id
        if refusal is not None:
            finish_operation(session, operation, status=refusal[0], summary=refusal[1])
            schedule.last_status = operation.status
            session.commit()
            log.warning("schedule %s %r: %s", schedule.id, schedule.name, refusal[1])
            schedule_failed(self.context.settings, schedule, operation)
            return None
        schedule.last_status = OperationStatus.RUNNING
        session.commit()
        log.info(
            "schedule %s %r fired for %s (operation %s)", schedule.id, schedule.name, run_at, operation.id
        )
        return PreparedRun(
            schedule.id, operation.id, schedule.action, tuple(node_ids), dict(schedule.options), actor
        )

    async def _execute(self, run: PreparedRun) -> Operation:
        factory = self.context.session_factory
        try:
            operation = await RUNNERS[run.action](self.context, run)
        except asyncio.CancelledError:
            self._close(run, OperationStatus.CANCELLED, "cancelled: mko stopped while it ran")
            raise
        except Exception as exc:
            log.exception("schedule %s: run failed", run.schedule_id)
            operation = self._close(run, OperationStatus.FAILED, f"failed: {exc}")
        with factory() as session:
            schedule = session.get(Schedule, run.schedule_id)
            if schedule is not None:
                schedule.last_status = operation.status
                session.commit()
                if operation.status != OperationStatus.SUCCEEDED:
                    schedule_failed(self.context.settings, schedule, session.get_one(Operation, operation.id))
        return operation

    def _close(self, run: PreparedRun, status: OperationStatus, summary: str) -> Operation:
        with self.context.session_factory() as session:
            operation = session.get_one(Operation, run.operation_id)
            if operation.status == OperationStatus.RUNNING:
                finish_operation(session, operation, status=status, summary=summary)
            return operation

    # -------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Tick, then sleep until the next run (at most ``schedule_poll_max`` s, or until poked); forever."""
        self._changed = asyncio.Event()
        poll_max = self.context.settings.schedule_poll_max
        while True:
            try:
                await self.tick()
                now = self.clock()
                upcoming = await anyio.to_thread.run_sync(self.next_due, now)
            except Exception:
                log.exception("scheduler pass failed; trying again")
                upcoming, now = None, self.clock()
            pause = poll_max if upcoming is None else min(poll_max, (upcoming - now).total_seconds())
            await self._pause(max(pause, 0.0))

    async def _pause(self, seconds: float) -> None:
        assert self._changed is not None
        self._changed.clear()
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        poked = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, poked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, poked):
                waiter.cancel()
            await asyncio.gather(sleeper, poked, return_exceptions=True)
