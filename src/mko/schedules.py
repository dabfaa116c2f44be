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

Actions are dispatched through a registry: :func:`register_action`; mko.shutdown registers the
cluster shutdown (a ``schedule_shutdown`` operation linking the ordered ``cluster_shutdown`` it ran).
An action nobody registered is refused at creation with a message naming what is missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio.to_thread
from croniter import croniter
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mko import inventory, reachability, wake
from mko.notify.delivery import decrypt_urls, encrypt_urls, masked, validate_urls
from mko.notify.messages import schedule_failed
from mko.operations import ownership
from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.models.schedules import Schedule, ScheduleAction
from mko.platform.errors import ConflictError, InputError, MkoError, NotFoundError
from mko.platform.settings import Settings
from mko.platform.validation import FREE_TEXT, InputModel

__all__ = [
    "RunContext",
    "ScheduleCreate",
    "SchedulePublic",
    "Scheduler",
    "check_cron",
    "check_timezone",
    "create_schedule",
    "delete_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "public",
    "register_action",
    "resume_schedule",
    "running_conflict",
    "runs_between",
]

log = logging.getLogger("mko.schedules")

CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
MISSED_CAP = 1000  # runs listed one by one in a missed-run report; more are counted as "more than"
_UNAVAILABLE = {
    ScheduleAction.SHUTDOWN: (
        "graceful shutdown is not available in this version; schedules can wake nodes and clusters"
    ),
}


# ------------------------------------------------------------------ cron and time zones


def check_cron(expression: str) -> str:
    """A standard five-field cron expression (or @daily, @hourly, …), normalised; InputError otherwise."""
    expr = " ".join(expression.split())
    if not expr:
        raise InputError("cron", "must not be empty")
    if expr.startswith("@"):
        if expr.lower() not in CRON_ALIASES:
            raise InputError("cron", f"{expr!r}: use one of {', '.join(sorted(CRON_ALIASES))}")
        return expr.lower()
    if len(expr.split(" ")) != 5:
        raise InputError(
            "cron",
            f"{expr!r}: use five fields, minute hour day-of-month month day-of-week (e.g. '30 7 * * 1-5')",
        )
    if not croniter.is_valid(expr):
        raise InputError("cron", f"{expr!r} is not a valid cron expression")
    return expr


def check_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; InputError naming the field when it is unknown."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            "timezone", f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin"
        ) from None


def runs_between(
    expression: str, zone: ZoneInfo, after: datetime, until: datetime | None = None, limit: int = 10
) -> list[datetime]:
    """Run instants (UTC) strictly after ``after`` and not after ``until``, at most ``limit``."""
    start = after.astimezone(zone)
    times = croniter(expression, start)
    last_wall = start.replace(tzinfo=None)
    found: list[datetime] = []
    while len(found) < limit:
        candidate: datetime = times.get_next(datetime)
        if until is not None and candidate > until:
            break
        wall = candidate.replace(tzinfo=None)
        # NOTE: when clocks go back an hour croniter yields the repeated wall-clock times twice (once per
        # UTC offset); cron users expect "02:30 daily" to run once that night, so a wall time not later
        # than the previous one is skipped.
        if wall <= last_wall:
            continue
        last_wall = wall
        found.append(candidate.astimezone(UTC))
    return found


def _latest_run(expression: str, zone: ZoneInfo, now: datetime) -> datetime:
    previous: datetime = croniter(expression, (now + timedelta(milliseconds=1)).astimezone(zone)).get_prev(
        datetime
    )
    return previous.astimezone(UTC)


# ------------------------------------------------------------------ models


class ScheduleCreate(InputModel):
    """A new schedule: what, on which node or cluster, when (cron + time zone), and wake options."""

    name: str = Field(min_length=1, max_length=200)
    action: ScheduleAction = ScheduleAction.WAKE
    cron: str = Field(description="five fields, e.g. '30 7 * * 1-5', or @daily / @hourly …")
    timezone: str | None = Field(default=None, description="IANA time zone; default from settings (UTC)")
    cluster_id: int | None = None
    node_id: int | None = None
    wait: bool = Field(default=False, description="probe woken nodes and re-send until they answer")
    timeout: float | None = Field(default=None, description="seconds to wait with wait=true")
    retries: int | None = Field(default=None, description="magic packets per node")
    delay: float | None = Field(default=None, description="seconds between packets")
    notify_urls: Annotated[list[str], FREE_TEXT] = Field(
        default=[], description="apprise URLs told when a run fails"
    )
    enabled: bool = True


class SchedulePublic(BaseModel):
    """A schedule as shown: its target, next runs and last outcome (notification URLs masked)."""

    id: int
    name: str
    action: ScheduleAction
    cron: str
    timezone: str
    cluster_id: int | None
    node_id: int | None
    target: str
    options: dict[str, Any]
    enabled: bool
    notify_urls: list[str]
    next_runs: list[datetime] = Field(description="the next three run instants (UTC); empty when paused")
    next_run_local: str | None = Field(description="the next run in the schedule's time zone")
    last_run_at: datetime | None
    last_operation_id: int | None
    last_status: OperationStatus | None
    created_at: datetime


def _target_label(session: Session, schedule: Schedule) -> str:
    if schedule.cluster_id is not None:
        cluster = inventory.get_cluster(session, schedule.cluster_id)
        return f"cluster {cluster.name} (#{cluster.id})"
    node = inventory.get_node(session, schedule.node_id or 0)
    return f"node {node.hostname} (#{node.id})"


def public(
    session: Session, settings: Settings, schedule: Schedule, now: datetime | None = None
) -> SchedulePublic:
    """The shown form of a schedule, with its next runs from ``now``."""
    now = now or utcnow()
    zone = ZoneInfo(schedule.timezone)
    upcoming = (
        runs_between(schedule.cron, zone, max(now, schedule.last_checked_at), limit=3)
        if schedule.enabled
        else []
    )
    return SchedulePublic(
        id=schedule.id,
        name=schedule.name,
        action=schedule.action,
        cron=schedule.cron,
        timezone=schedule.timezone,
        cluster_id=schedule.cluster_id,
        node_id=schedule.node_id,
        target=_target_label(session, schedule),
        options=schedule.options,
        enabled=schedule.enabled,
        notify_urls=[masked(u) for u in decrypt_urls(settings, schedule.notify_urls_encrypted)],
        next_runs=upcoming,
        next_run_local=upcoming[0].astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if upcoming else None,
        last_run_at=schedule.last_run_at,
        last_operation_id=schedule.last_operation_id,
        last_status=schedule.last_status,
        created_at=schedule.created_at,
    )


# ------------------------------------------------------------------ service


def create_schedule(
    session: Session, settings: Settings, data: ScheduleCreate, *, now: datetime | None = None
) -> Schedule:
    """Check everything, then store the schedule; its first run is the first cron time after ``now``."""
    name = data.name.strip()
    if not name:
        raise InputError("name", "must not be empty")
    if data.action in _UNAVAILABLE:
        raise InputError("action", _UNAVAILABLE[data.action])
    if (data.cluster_id is None) == (data.node_id is None):
        raise InputError("cluster_id", "give exactly one target: a cluster or a node")
    if data.cluster_id is not None:
        if not _exists(session, "cluster", data.cluster_id):
            raise InputError("cluster_id", f"cluster {data.cluster_id} does not exist")
    elif data.action != ScheduleAction.WAKE:
        raise InputError("node_id", f"{data.action.value} acts on a whole cluster; give cluster_id")
    elif not _exists(session, "node", data.node_id or 0):
        raise InputError("node_id", f"node {data.node_id} does not exist")
    cron = check_cron(data.cron)
    zone_name = (data.timezone or settings.schedule_default_timezone).strip()
    check_timezone(zone_name)
    options: dict[str, Any] = {}
    if data.action == ScheduleAction.WAKE:
        # make_schedule names the field of an out-of-range option; only options given are stored, so
        # later changes to the settings defaults apply to existing schedules.
        wake.make_schedule(
            settings, retries=data.retries, delay=data.delay, wait=data.wait, timeout=data.timeout
        )
        given = {"retries": data.retries, "delay": data.delay, "timeout": data.timeout}
        options = {"wait": data.wait} | {k: v for k, v in given.items() if v is not None}
    urls = validate_urls(data.notify_urls)
    schedule = Schedule(
        name=name,
        action=data.action,
        cluster_id=data.cluster_id,
        node_id=data.node_id,
        cron=cron,
        timezone=zone_name,
        options=options,
        enabled=data.enabled,
        notify_urls_encrypted=encrypt_urls(settings, urls),
        last_checked_at=now or utcnow(),
    )
    session.add(schedule)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"a schedule named {name!r} already exists") from None
    log.info("schedule %s %r created: %s %s (%s)", schedule.id, name, data.action.value, cron, zone_name)
    return schedule


def _exists(session: Session, kind: str, ident: int) -> bool:
    try:
        (inventory.get_cluster if kind == "cluster" else inventory.get_node)(session, ident)
    except NotFoundError:
        return False
    return True


def get_schedule(session: Session, schedule_id: int) -> Schedule:
    """The schedule with this id, or NotFoundError."""
    schedule = session.get(Schedule, schedule_id)
    if schedule is None:
        raise NotFoundError("schedule", schedule_id)
    return schedule


def list_schedules(session: Session) -> list[Schedule]:
    """Every schedule, by id."""
    return list(session.scalars(select(Schedule).order_by(Schedule.id)))


def delete_schedule(session: Session, schedule_id: int) -> None:
    """Remove a schedule (its past runs stay in the operation log)."""
    session.delete(get_schedule(session, schedule_id))
    session.commit()


def pause_schedule(session: Session, schedule_id: int) -> Schedule:
    """Stop running a schedule until it is resumed."""
    schedule = get_schedule(session, schedule_id)
    schedule.enabled = False
    session.commit()
    return schedule


def resume_schedule(session: Session, schedule_id: int, *, now: datetime | None = None) -> Schedule:
    """Run a paused schedule again from now on; times that passed while it was paused are not missed runs."""
    schedule = get_schedule(session, schedule_id)
    if not schedule.enabled:
        schedule.enabled = True
        schedule.last_checked_at = now or utcnow()
        session.commit()
    return schedule


def running_conflict(session: Session, cluster_id: int | None, node_ids: Sequence[int]) -> Operation | None:
    """A running operation on this cluster or on one of these nodes (as target or by a running step).

    Operations a dead process left open are closed first (mko.operations.ownership): they block nothing.
    """
    ownership.close_orphaned(session)
    conditions: list[ColumnElement[bool]] = []
    if cluster_id is not None:
        conditions.append((Operation.target_type == "cluster") & (Operation.target_id == cluster_id))
    if node_ids:
        conditions.append((Operation.target_type == "node") & Operation.target_id.in_(node_ids))
        stepping = select(OperationStep.operation_id).where(
            OperationStep.node_id.in_(node_ids), OperationStep.status == OperationStatus.RUNNING
        )
        conditions.append(Operation.id.in_(stepping))
    if not conditions:
        return None
    query = select(Operation).where(Operation.status == OperationStatus.RUNNING, or_(*conditions))
    return session.scalars(query.order_by(Operation.id).limit(1)).first()


# ------------------------------------------------------------------ running


@dataclass(frozen=True)
class PreparedRun:
    """A run that passed its checks: its operation is recorded and running."""

    schedule_id: int
    operation_id: int
    action: ScheduleAction
    node_ids: tuple[int, ...]
    options: dict[str, Any]
    actor: Actor


@dataclass
class RunContext:
    """What an action runner needs: a session factory and the settings."""

    session_factory: sessionmaker[Session]
    settings: Settings


ActionRunner = Callable[[RunContext, PreparedRun], Awaitable[Operation]]
_RUNNERS: dict[ScheduleAction, ActionRunner] = {}


def register_action(action: ScheduleAction, runner: ActionRunner) -> None:
    """Make ``action`` schedulable (graceful shutdown registers itself here when it exists)."""
    _RUNNERS[action] = runner
    _UNAVAILABLE.pop(action, None)


async def _run_wake(context: RunContext, run: PreparedRun) -> Operation:
    """Probe the targets, then wake only the nodes that do not answer."""
    factory, settings = context.session_factory, context.settings
    with factory() as session:
        nodes = [n for n in (session.get(Node, i) for i in run.node_ids) if n is not None]
        reach = await reachability.probe_nodes(nodes, settings.probe_timeout)
        operation = session.get_one(Operation, run.operation_id)
        up = [n for n in nodes if reach[n.id].up]
        down = [n for n in nodes if not reach[n.id].up]
        record_step(
            session,
            operation,
            name="probe",
            status=OperationStatus.SUCCEEDED,
            message=f"{len(up)} of {len(nodes)} node(s) already up",
            detail={"up": [n.id for n in up], "down": [n.id for n in down]},
        )
        for node in up:
            record_step(
                session,
                operation,
                name=f"skip {node.hostname}",
                node_id=node.id,
                status=OperationStatus.SUCCEEDED,
                message=f"already up (port {reach[node.id].port} answered); not woken",
            )
        if not down:
            return finish_operation(
                session,
                operation,
                status=OperationStatus.SUCCEEDED,
                summary=f"all {len(nodes)} node(s) already up; nothing sent",
                result={"already_up": [n.id for n in up], "woken": []},
            )
        options = run.options
        try:
            schedule = wake.make_schedule(
                settings,
                retries=options.get("retries"),
                delay=options.get("delay"),
                wait=bool(options.get("wait", False)),
                timeout=options.get("timeout"),
            )
            prepared = wake.start_wake(
                session,
                target_type="nodes",
                target_id=None,
                schedule=schedule,
                actor=run.actor,
                node_ids=[n.id for n in down],
            )
        except MkoError as exc:
            record_step(session, operation, name="wake", status=OperationStatus.FAILED, message=str(exc))
            return finish_operation(
                session, operation, status=OperationStatus.FAILED, summary=f"wake refused: {exc}"
            )
        step = record_step(
            session,
            operation,
            name="wake",
            status=OperationStatus.RUNNING,
            message=f"waking {len(prepared.nodes)} node(s) in operation #{prepared.operation_id}",
            detail={"operation_id": prepared.operation_id},
        )
        step_id = step.id
    woken = await wake.run_wake(factory, settings, prepared)
    with factory() as session:
        operation = session.get_one(Operation, run.operation_id)
        step = session.get_one(OperationStep, step_id)
        step.status, step.message, step.finished_at = woken.status, f"#{woken.id}: {woken.summary}", utcnow()
        prefix = f"{len(up)} already up; " if up else ""
        return finish_operation(
            session,
            operation,
            status=woken.status,
            summary=f"{prefix}woke {len(down)}: {woken.summary}",
            result={
                "already_up": [n.id for n in up],
                "woken": [n.id for n in down],
                "wake_operation_id": woken.id,
            },
        )


register_action(ScheduleAction.WAKE, _run_wake)


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
            cluster_name = inventory.get_cluster(session, schedule.cluster_id).name
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
            node_ids = [n.id for n in inventory.list_nodes(session, schedule.cluster_id)]
        else:
            node = inventory.get_node(session, schedule.node_id or 0)
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
        elif schedule.action not in _RUNNERS:
            refusal = (OperationStatus.FAILED, _UNAVAILABLE.get(schedule.action, "no runner for this action"))
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
            operation = await _RUNNERS[run.action](self.context, run)
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
