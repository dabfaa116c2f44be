"""Schedule pages: the list, adding one, pausing and resuming."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from mko.http.deps import SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.inventory.clusters import list_clusters
from mko.inventory.nodes import list_nodes
from mko.platform.errors import ConflictError, InputError
from mko.schedules.schemas import ScheduleCreate
from mko.schedules.service import (
    create_schedule,
    delete_schedule,
    list_schedules,
    pause_schedule,
    public,
    resume_schedule,
)
from mko.web.forms import FormDep, blank_to_none, field_errors
from mko.web.pages.render import _render, _see_other

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


def _schedules_page(
    request: Request, session: SessionDep, status_code: int = 200, **context: Any
) -> HTMLResponse:
    settings = request.app.state.settings
    targets = [("", "—")]
    targets += [(f"cluster:{c.id}", f"cluster {c.name}") for c in list_clusters(session)]
    targets += [(f"node:{n.id}", f"node {n.hostname}") for n in list_nodes(session)]
    return _render(
        request,
        "schedules.html",
        status_code,
        schedules=[public(session, settings, s) for s in list_schedules(session)],
        targets=targets,
        actions=[("wake", "wake"), ("shutdown", "graceful shutdown (cluster)")],
        default_timezone=settings.schedule_default_timezone,
        **context,
    )


def _poke_scheduler(request: Request) -> None:
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.poke()


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Every schedule with its next run; add, pause, resume, remove."""
    return _schedules_page(request, session)


@router.post("/schedules", response_class=HTMLResponse)
def add_schedule(request: Request, session: SessionDep, settings: SettingsDep, form: FormDep) -> Response:
    """Add a schedule from the form; errors are shown next to their field and nothing is stored."""
    values = blank_to_none(form, ["name", "action", "target", "cron", "timezone", "notify_url"])
    values["wait"] = form.get("wait") == "on"
    kind, _, ident = str(values.get("target") or "").partition(":")
    try:
        data = ScheduleCreate(
            name=values["name"] or "",
            action=values["action"] or "wake",
            cron=values["cron"] or "",
            timezone=values["timezone"],
            cluster_id=int(ident) if kind == "cluster" and ident.isdigit() else None,
            node_id=int(ident) if kind == "node" and ident.isdigit() else None,
            wait=values["wait"],
            notify_urls=[values["notify_url"]] if values["notify_url"] else [],
        )
        create_schedule(session, settings, data)
    except (InputError, ValidationError) as exc:
        errors = field_errors(exc)
        for target_field in ("cluster_id", "node_id"):
            if target_field in errors:
                errors["target"] = errors.pop(target_field)
        if "notify_urls" in errors:
            errors["notify_url"] = errors.pop("notify_urls")
        return _schedules_page(request, session, 422, form=values, errors=errors)
    except ConflictError as exc:
        return _schedules_page(request, session, 409, form=values, errors={"name": str(exc)})
    _poke_scheduler(request)
    return _see_other("/schedules")


@router.post("/schedules/{schedule_id:int}/{change}", response_class=HTMLResponse)
def change_schedule(request: Request, session: SessionDep, schedule_id: int, change: str) -> Response:
    """Pause, resume or remove a schedule."""
    if change == "pause":
        pause_schedule(session, schedule_id)
    elif change == "resume":
        resume_schedule(session, schedule_id)
    elif change == "remove":
        delete_schedule(session, schedule_id)
    else:
        return _schedules_page(request, session, 404, errors={"form": f"unknown change {change!r}"})
    _poke_scheduler(request)
    return _see_other("/schedules")
