"""What a schedule runs (a wake, a cluster shutdown) and the context each run gets.

The table of runners is static: schedules sit above the cluster layer, so the scheduled shutdown calls
the cluster's shutdown directly and nothing has to register itself at import."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from mko.cluster.options import get_options
from mko.cluster.plan import plan_shutdown
from mko.cluster.preflight import CheckReport, checked_run, start_check
from mko.cluster.shutdown import run_shutdown, start_shutdown
from mko.operations.records import Actor, finish_operation, record_step
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.models.schedules import ScheduleAction
from mko.platform.errors import ConflictError, MkoError
from mko.platform.settings import Settings
from mko.wol import reachability
from mko.wol.wake import make_schedule, run_wake, start_wake

__all__ = ["RUNNERS", "PreparedRun", "RunContext", "run_scheduled_shutdown", "run_scheduled_wake"]


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


async def run_scheduled_wake(context: RunContext, run: PreparedRun) -> Operation:
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
            schedule = make_schedule(
                settings,
                retries=options.get("retries"),
                delay=options.get("delay"),
                wait=bool(options.get("wait", False)),
                timeout=options.get("timeout"),
            )
            prepared = start_wake(
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
        message = f"waking {len(prepared.nodes)} node(s) in operation #{prepared.operation_id}"
        step_id = _linking_step(session, operation, "wake", message, prepared.operation_id)
    woken = await run_wake(factory, settings, prepared)
    prefix = f"{len(up)} already up; " if up else ""
    return _finish_linked(
        context,
        run,
        step_id,
        woken,
        summary=f"{prefix}woke {len(down)}: {woken.summary}",
        result={
            "already_up": [n.id for n in up],
            "woken": [n.id for n in down],
            "wake_operation_id": woken.id,
        },
    )


async def run_scheduled_shutdown(context: RunContext, run: PreparedRun) -> Operation:
    """A schedule's shutdown: plan now, run it as its own operation, link it from the schedule's.

    The preflight checks run first when the cluster has ``preflight_required`` (a failing check refuses
    the shutdown), else beside the shutdown's first steps; either way the findings are in its operation.
    """
    factory, settings = context.session_factory, context.settings
    with factory() as session:
        operation = session.get_one(Operation, run.operation_id)
        cluster_id = operation.target_id or 0
        required = get_options(session, cluster_id).preflight_required
        check = start_check(session, cluster_id, run.actor) if required else None
    checks: bool | CheckReport = True
    if check is not None:
        checked, report = await checked_run(factory, settings, check)
        failed = report.failures() if report is not None else [checked.summary]
        if failed:
            why = f"preflight check #{checked.id} failed and this cluster requires it: {'; '.join(failed)}"
            with factory() as session:
                operation = session.get_one(Operation, run.operation_id)
                detail = {"check_operation_id": checked.id}
                return _not_started(session, operation, "preflight", OperationStatus.FAILED, why, detail)
        checks = report if report is not None else True
    with factory() as session:
        operation = session.get_one(Operation, run.operation_id)
        try:
            plan = await plan_shutdown(session, settings, cluster_id, force=bool(run.options.get("force")))
            prepared = start_shutdown(session, plan, run.actor)
        except ConflictError as exc:
            return _not_started(session, operation, "shutdown", OperationStatus.CANCELLED, str(exc))
        message = f"shutting down in operation #{prepared.operation_id}"
        step_id = _linking_step(session, operation, "shutdown", message, prepared.operation_id)
    done = await run_shutdown(factory, settings, prepared, checks=checks)
    return _finish_linked(
        context,
        run,
        step_id,
        done,
        summary=f"shutdown #{done.id}: {done.summary}",
        result={"shutdown_operation_id": done.id},
    )


def _not_started(
    session: Session,
    operation: Operation,
    step: str,
    status: OperationStatus,
    why: str,
    detail: dict[str, Any] | None = None,
) -> Operation:
    """Close a schedule's run whose shutdown never started, saying why in a step and the summary."""
    record_step(session, operation, name=step, status=status, message=why, detail=detail)
    return finish_operation(session, operation, status=status, summary=f"not started: {why}", result=detail)


def _linking_step(session: Session, operation: Operation, name: str, message: str, child_id: int) -> int:
    """The run's step that links the operation doing the work (a wake, a shutdown); its id."""
    step = record_step(
        session,
        operation,
        name=name,
        status=OperationStatus.RUNNING,
        message=message,
        detail={"operation_id": child_id},
    )
    return step.id


def _finish_linked(
    context: RunContext,
    run: PreparedRun,
    step_id: int,
    child: Operation,
    *,
    summary: str,
    result: dict[str, Any],
) -> Operation:
    """Close the linking step and the run with the outcome of the operation that did the work."""
    with context.session_factory() as session:
        operation = session.get_one(Operation, run.operation_id)
        step = session.get_one(OperationStep, step_id)
        step.status, step.message, step.finished_at = child.status, f"#{child.id}: {child.summary}", utcnow()
        return finish_operation(session, operation, status=child.status, summary=summary, result=result)


RUNNERS: dict[ScheduleAction, ActionRunner] = {
    ScheduleAction.WAKE: run_scheduled_wake,
    ScheduleAction.SHUTDOWN: run_scheduled_shutdown,
}
