"""Schedules: cron-timed wakes (and, once it exists, graceful shutdowns) of nodes and clusters."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from mko import schedules
from mko.api.deps import SessionDep, SettingsDep
from mko.api.routing import MkoRoute
from mko.schedules import ScheduleCreate, SchedulePublic

router = APIRouter(prefix="/api", tags=["schedules"], route_class=MkoRoute)


def _poke(request: Request) -> None:
    """Let the running scheduler re-read the schedules now rather than at its next poll."""
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.poke()


@router.get("/schedules")
def list_schedules(session: SessionDep, settings: SettingsDep) -> list[SchedulePublic]:
    """Every schedule with its next three runs and its last outcome."""
    return [schedules.public(session, settings, s) for s in schedules.list_schedules(session)]


@router.post("/schedules", status_code=status.HTTP_201_CREATED)
def create_schedule(
    request: Request, session: SessionDep, settings: SettingsDep, body: ScheduleCreate
) -> SchedulePublic:
    """Add a schedule (422 naming the field for a bad cron expression, time zone, target or option)."""
    schedule = schedules.create_schedule(session, settings, body)
    _poke(request)
    return schedules.public(session, settings, schedule)


@router.get("/schedules/{schedule_id:int}")
def get_schedule(session: SessionDep, settings: SettingsDep, schedule_id: int) -> SchedulePublic:
    """One schedule."""
    return schedules.public(session, settings, schedules.get_schedule(session, schedule_id))


@router.delete("/schedules/{schedule_id:int}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(request: Request, session: SessionDep, schedule_id: int) -> Response:
    """Remove a schedule; its past runs stay in the operation log."""
    schedules.delete_schedule(session, schedule_id)
    _poke(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/schedules/{schedule_id:int}/pause")
def pause_schedule(
    request: Request, session: SessionDep, settings: SettingsDep, schedule_id: int
) -> SchedulePublic:
    """Stop running the schedule until it is resumed."""
    schedule = schedules.pause_schedule(session, schedule_id)
    _poke(request)
    return schedules.public(session, settings, schedule)


@router.post("/schedules/{schedule_id:int}/resume")
def resume_schedule(
    request: Request, session: SessionDep, settings: SettingsDep, schedule_id: int
) -> SchedulePublic:
    """Run the schedule again from now on (times passed while paused are not reported as missed)."""
    schedule = schedules.resume_schedule(session, schedule_id)
    _poke(request)
    return schedules.public(session, settings, schedule)
