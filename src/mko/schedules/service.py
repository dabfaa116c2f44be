"""Schedules: create, read, pause, resume, delete."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.inventory.clusters import get_cluster
from mko.inventory.nodes import get_node
from mko.notify.delivery import decrypt_urls, encrypt_urls, masked, validate_urls
from mko.operations import ownership
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.models.schedules import Schedule, ScheduleAction
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.missing import does_not_exist
from mko.platform.settings import Settings
from mko.schedules.cron import check_cron, check_timezone, runs_between
from mko.schedules.schemas import SchedulePublic
from mko.wol.wake import make_schedule

if TYPE_CHECKING:
    from mko.schedules.schemas import ScheduleCreate

__all__ = [
    "create_schedule",
    "delete_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "public",
    "resume_schedule",
    "running_conflict",
]

log = logging.getLogger("mko.schedules")


def _target_label(session: Session, schedule: Schedule) -> str:
    if schedule.cluster_id is not None:
        cluster = get_cluster(session, schedule.cluster_id)
        return f"cluster {cluster.name} (#{cluster.id})"
    node = get_node(session, schedule.node_id or 0)
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


def create_schedule(
    session: Session, settings: Settings, data: ScheduleCreate, *, now: datetime | None = None
) -> Schedule:
    """Check everything, then store the schedule; its first run is the first cron time after ``now``."""
    name = data.name.strip()
    if not name:
        raise InputError("name", "must not be empty")
    if (data.cluster_id is None) == (data.node_id is None):
        raise InputError("cluster_id", "give exactly one target: a cluster or a node")
    if data.cluster_id is not None:
        if not _exists(session, "cluster", data.cluster_id):
            raise InputError("cluster_id", does_not_exist("cluster", data.cluster_id))
    elif data.action != ScheduleAction.WAKE:
        raise InputError("node_id", f"{data.action.value} acts on a whole cluster; give cluster_id")
    elif not _exists(session, "node", data.node_id or 0):
        raise InputError("node_id", does_not_exist("node", data.node_id))
    cron = check_cron(data.cron)
    zone_name = (data.timezone or settings.schedule_default_timezone).strip()
    check_timezone(zone_name)
    options: dict[str, Any] = {}
    if data.action == ScheduleAction.WAKE:
        # make_schedule names the field of an out-of-range option; only options given are stored, so
        # later changes to the settings defaults apply to existing schedules.
        make_schedule(settings, retries=data.retries, delay=data.delay, wait=data.wait, timeout=data.timeout)
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
        (get_cluster if kind == "cluster" else get_node)(session, ident)
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
