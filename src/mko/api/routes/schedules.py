"""Schedules: cron-timed wakes (and, once it exists, graceful shutdowns) of nodes and clusters."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from mko.http.deps import SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.schedules import service as schedules_service
from mko.schedules.schemas import ScheduleCreate, SchedulePublic
from mko.schedules.service import public

router = APIRouter(prefix="/api", tags=["schedules"], route_class=MkoRoute)


def _poke(request: Request) -> None:
    """Let the running scheduler re-read the schedules now rather than at its next poll."""
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.poke()


@router.get("/schedules")
def list_schedules(session: SessionDep, settings: SettingsDep) -> list[SchedulePublic]:
    """Every schedule with its next three runs and its last outcome."""
    return [public(session, settings, s) for s in schedules_service.list_schedules(session)]


@router.post("/schedules", status_code=status.HTTP_201_CREATED)
def create_schedule(
    request: Request, session: SessionDep, settings: SettingsDep, body: ScheduleCreate
) -> SchedulePublic:
    """Add a schedule (422 naming the field for a bad cron expression, time zone, target or option)."""
    schedule = schedules_service.create_schedule(session, settings, body)
    _poke(request)
    return public(session, settings, schedule)


@router.get("/schedules/{schedule_id:int}")
def get_schedule(session: SessionDep, settings: SettingsDep, schedule_id: int) -> SchedulePublic:
    """One schedule."""
    return public(session, settings, schedules_service.get_schedule(session, schedule_id))


@router.delete("/schedules/{schedule_id:int}", status_code=status.HTTP_204_NO_CONTENT)
def delete_schedule(request: Request, session: SessionDep, schedule_id: int) -> Response:
    """Remove a schedule; its past runs stay in the operation log."""
    schedules_service.delete_schedule(session, schedule_id)
    _poke(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/schedules/{schedule_id:int}/pause")
def pause_schedule(
    request: Request, session: SessionDep, settings: SettingsDep, schedule_id: int
) -> SchedulePublic:
    """Stop running the schedule until it is resumed."""
    schedule = schedules_service.pause_schedule(session, schedule_id)
    _poke(request)
    return public(session, settings, schedule)


@router.post("/schedules/{schedule_id:int}/resume")
def resume_schedule(
    request: Request, session: SessionDep, settings: SettingsDep, schedule_id: int
) -> SchedulePublic:
    """Run the schedule again from now on (times passed while paused are not reported as missed)."""
    schedule = schedules_service.resume_schedule(session, schedule_id)
    _poke(request)
    return public(session, settings, schedule)
