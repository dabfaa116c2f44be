"""`mko schedule …` — wake nodes and clusters at cron times in a time zone."""

from __future__ import annotations

from typing import Annotated

import typer

from mko.cli.common import console, emit, open_session
from mko.platform.db.models.schedules import ScheduleAction
from mko.platform.settings import get_settings
from mko.schedules.schemas import ScheduleCreate
from mko.schedules.service import (
    create_schedule,
    delete_schedule,
    get_schedule,
    list_schedules,
    pause_schedule,
    public,
    resume_schedule,
)

schedule_app = typer.Typer(
    help="Schedules: wake a node or cluster at cron times in a time zone (they run inside `mko serve`).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
COLUMNS = ("id", "name", "action", "target", "cron", "timezone", "enabled", "next_run_local", "last_status")


@schedule_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="a name for the schedule, e.g. 'weekday morning'")],
    cron: Annotated[str, typer.Option("--cron", help="five fields, e.g. '30 7 * * 1-5', or @daily")],
    cluster: Annotated[int | None, typer.Option("--cluster", help="cluster id to act on")] = None,
    node: Annotated[int | None, typer.Option("--node", help="node id to act on")] = None,
    action: Annotated[ScheduleAction, typer.Option("--action", help="what to do")] = ScheduleAction.WAKE,
    timezone: Annotated[
        str | None, typer.Option("--timezone", "--tz", help="IANA zone, e.g. Europe/Berlin [default: UTC]")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="verify woken nodes come up (re-send until then)")
    ] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="seconds to wait with --wait")] = None,
    retries: Annotated[int | None, typer.Option("--retries", help="magic packets per node")] = None,
    delay: Annotated[float | None, typer.Option("--delay", help="seconds between packets")] = None,
    notify_url: Annotated[
        list[str] | None, typer.Option("--notify-url", help="apprise URL told about failed runs (repeatable)")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="create it paused")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a schedule; prints its next run times."""
    data = ScheduleCreate(
        name=name,
        action=action,
        cron=cron,
        timezone=timezone,
        cluster_id=cluster,
        node_id=node,
        wait=wait,
        timeout=timeout,
        retries=retries,
        delay=delay,
        notify_urls=notify_url or [],
        enabled=not paused,
    )
    settings = get_settings()
    with open_session() as session:
        schedule = create_schedule(session, settings, data)
        shown = public(session, settings, schedule)
    emit(shown, COLUMNS, as_json=as_json)
    if not as_json:
        console.print("[dim]schedules run inside `mko serve`; it picks this one up within seconds[/dim]")


@schedule_app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Every schedule with its next run (in its own time zone) and its last outcome."""
    settings = get_settings()
    with open_session() as session:
        shown = [public(session, settings, s) for s in list_schedules(session)]
    emit(shown, COLUMNS, as_json=as_json, title="schedules")


@schedule_app.command("show")
def show(schedule_id: int, as_json: JsonOpt = False) -> None:
    """One schedule, with its next three runs."""
    settings = get_settings()
    with open_session() as session:
        shown = public(session, settings, get_schedule(session, schedule_id))
    emit(shown, COLUMNS, as_json=as_json)


@schedule_app.command("remove")
def remove(schedule_id: int) -> None:
    """Remove a schedule (its past runs stay in the operation log)."""
    with open_session() as session:
        delete_schedule(session, schedule_id)
    console.print(f"schedule {schedule_id} removed")


@schedule_app.command("pause")
def pause(schedule_id: int, as_json: JsonOpt = False) -> None:
    """Stop running a schedule until it is resumed."""
    settings = get_settings()
    with open_session() as session:
        shown = public(session, settings, pause_schedule(session, schedule_id))
    emit(shown, COLUMNS, as_json=as_json)


@schedule_app.command("resume")
def resume(schedule_id: int, as_json: JsonOpt = False) -> None:
    """Run a paused schedule again from now on (times passed while paused are not missed runs)."""
    settings = get_settings()
    with open_session() as session:
        shown = public(session, settings, resume_schedule(session, schedule_id))
    emit(shown, COLUMNS, as_json=as_json)
