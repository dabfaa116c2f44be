"""UPSes, their status and event log, and power rules: parse → service → schema."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, BeforeValidator, ConfigDict
from sqlalchemy.orm import Session

from mko.cluster.schemas import OutagePublic
from mko.http.deps import DbDep, SessionDep, SettingsDep
from mko.http.leader import ups_monitor
from mko.http.live import LiveReads
from mko.http.routing import MkoRoute
from mko.inventory.feeds import ups_feeds
from mko.platform.db.models.ups import PowerEvent
from mko.platform.secrets import SecretBox
from mko.rules import service as rules_service
from mko.rules.schemas import RuleCreate, RulePublic
from mko.rules.service import set_rule_enabled
from mko.ups import outages, service
from mko.ups.monitor import UpsMonitor
from mko.ups.schemas import UpsCreate, UpsEventPublic, UpsPublic

router = APIRouter(prefix="/api/ups", tags=["ups"], route_class=MkoRoute)


def _iso_only(value: object) -> object:
    """A date and time as text: pydantic would also take a bare number as seconds since 1970."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*", value):
        raise ValueError("give an ISO 8601 date and time, e.g. 2026-01-31T12:00:00Z")
    return value


def _monitor(request: Request) -> UpsMonitor | None:
    monitor = ups_monitor(request.app)
    return monitor if monitor is not None and monitor.running else None


def _changed(request: Request) -> None:
    """Tell this process's monitor to re-read the UPS list and thresholds now."""
    monitor = _monitor(request)
    if monitor is not None:
        monitor.request_reload()


# Fixed paths first, for the schema's order; {ups_id:int} is what keeps /api/ups/monitor, /events and
# /rules from being read as an id (DELETE /api/ups/monitor is a 405 naming GET, not a 422).


@router.get("/events")
def list_events(
    session: SessionDep,
    ups_id: int | None = None,
    event: PowerEvent | None = None,
    since: Annotated[
        datetime | None,
        BeforeValidator(_iso_only),
        Query(description="ISO 8601 date and time, e.g. 2026-01-31T12:00:00Z"),
    ] = None,
    limit: int = Query(default=50, ge=1, le=10_000),
) -> list[UpsEventPublic]:
    """Stored power events, newest first; filter by UPS, kind or time."""
    found = service.list_events(session, ups_id=ups_id, event=event, since=since, limit=limit)
    return [UpsEventPublic.model_validate(e) for e in found]


@router.get("/monitor")
def monitor_state(request: Request) -> dict[str, Any]:
    """Whether this server runs the UPS monitor, what it watches, rule executions in progress (with what
    a restore waits for), and the marker of mko's host's last power-down, read at start."""
    monitor = _monitor(request)
    if monitor is None:
        return {"running": False, "ups": [], "executions": [], "powerdown": None}
    return {
        "running": True,
        "ups": [monitor.snapshot(ups_id) or {"ups_id": ups_id} for ups_id in monitor.watched()],
        "executions": monitor.sink.pending(),
        "powerdown": monitor.powerdown,
    }


@router.get("/outages", tags=["outages"])
def list_outages(
    session: SessionDep,
    cluster_id: int | None = None,
    open_only: bool = Query(default=False, alias="open"),
    limit: int = Query(default=50, ge=1, le=10_000),
) -> list[OutagePublic]:
    """Clusters powered down because of a UPS, newest first (``open=true``: not closed yet)."""
    found = outages.list_outages(session, cluster_id=cluster_id, open_only=open_only, limit=limit)
    return [OutagePublic.model_validate(outages.outage_doc(session, o)) for o in found]


@router.get("/outages/{outage_id:int}", tags=["outages"])
def get_outage(session: SessionDep, outage_id: int) -> OutagePublic:
    """One outage: the nodes up before, those mko powered off, the power cycle, the host, the restore."""
    return OutagePublic.model_validate(outages.outage_doc(session, outages.get_outage(session, outage_id)))


@router.get("/rules", tags=["power rules"])
def list_rules(
    session: SessionDep, ups_id: int | None = None, cluster_id: int | None = None
) -> list[RulePublic]:
    """Power rules by UPS and priority, with their counters."""
    return [
        RulePublic.model_validate(r)
        for r in rules_service.list_rules(session, ups_id=ups_id, cluster_id=cluster_id)
    ]


@router.post("/rules", status_code=status.HTTP_201_CREATED, tags=["power rules"])
def create_rule(request: Request, session: SessionDep, body: RuleCreate) -> RulePublic:
    """The seed's create-rule: wake_on_lan (with recovery unless recover_after_wake is false) or shutdown."""
    rule = rules_service.create_rule(session, body)
    _changed(request)
    return RulePublic.model_validate(rule)


@router.get("/rules/{rule_id:int}", tags=["power rules"])
def get_rule(session: SessionDep, rule_id: int) -> RulePublic:
    """One rule."""
    return RulePublic.model_validate(rules_service.get_rule(session, rule_id))


@router.put("/rules/{rule_id:int}", tags=["power rules"])
def update_rule(request: Request, session: SessionDep, rule_id: int, body: RuleCreate) -> RulePublic:
    """Replace a rule's settings (the body of create-rule); its counters stay."""
    rule = rules_service.update_rule(session, rule_id, body)
    _changed(request)
    return RulePublic.model_validate(rule)


@router.delete("/rules/{rule_id:int}", status_code=status.HTTP_204_NO_CONTENT, tags=["power rules"])
def delete_rule(request: Request, session: SessionDep, rule_id: int) -> Response:
    """Remove a rule (a waiting execution of it will not fire)."""
    rules_service.delete_rule(session, rule_id)
    _changed(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/rules/{rule_id:int}/enable", tags=["power rules"])
def enable_rule(request: Request, session: SessionDep, rule_id: int) -> RulePublic:
    """Enable a rule."""
    rule = set_rule_enabled(session, rule_id, True)
    _changed(request)
    return RulePublic.model_validate(rule)


@router.post("/rules/{rule_id:int}/disable", tags=["power rules"])
def disable_rule(request: Request, session: SessionDep, rule_id: int) -> RulePublic:
    """Disable a rule (a waiting execution of it will not fire)."""
    rule = set_rule_enabled(session, rule_id, False)
    _changed(request)
    return RulePublic.model_validate(rule)


@router.get("")
def list_ups(session: SessionDep) -> list[UpsPublic]:
    """All UPSes."""
    fed = ups_feeds(session)
    return [UpsPublic.of(u, fed.get(u.id, ())) for u in service.list_ups(session)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_ups(request: Request, session: SessionDep, settings: SettingsDep, body: UpsCreate) -> UpsPublic:
    """Add a UPS (a device on a NUT server); the monitor starts watching it within seconds."""
    ups = service.create_ups(session, settings, body)
    _changed(request)
    return UpsPublic.of(ups)


@router.get("/{ups_id:int}")
def get_ups(session: SessionDep, ups_id: int) -> UpsPublic:
    """One UPS."""
    return UpsPublic.of(service.get_ups(session, ups_id), ups_feeds(session, [ups_id]).get(ups_id, ()))


@router.delete("/{ups_id:int}", status_code=status.HTTP_204_NO_CONTENT)
def delete_ups(request: Request, session: SessionDep, ups_id: int, force: bool = False) -> Response:
    """Remove a UPS and its events; 409 while rules use it unless ``force=true`` (the rules go too)."""
    service.delete_ups(session, ups_id, force=force)
    _changed(request)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class PowerCycleBody(BaseModel):
    """Whether the UPS power-cycles its load at the end of a shutdown for it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


@router.put("/{ups_id:int}/power-cycle")
def set_power_cycle(request: Request, session: SessionDep, ups_id: int, body: PowerCycleBody) -> UpsPublic:
    """Turn the power cycle at the end of a shutdown on or off (on needs the UPS's upsd credentials)."""
    ups = service.set_power_cycle(session, ups_id, body.enabled)
    _changed(request)
    return UpsPublic.of(ups)


@router.get("/{ups_id:int}/status")
async def ups_status(request: Request, db: DbDep, settings: SettingsDep, ups_id: int) -> dict[str, Any]:
    """Status in words, charge, runtime, load, input voltage, last update and reachability.

    From the monitor's latest read when this server runs it; otherwise read from upsd, at most once per
    live_read_interval per UPS however many pages ask (``checked_at``, ``age_seconds``).
    """

    def load(session: Session) -> service.UpsTarget:
        ups = service.get_ups(session, ups_id)
        box = SecretBox.from_settings(settings) if ups.password_encrypted else None
        return service.target_of(ups, box)

    target = await db.run(load)
    monitor = _monitor(request)
    snapshot = monitor.snapshot(ups_id) if monitor is not None else None
    if snapshot is not None:
        return snapshot
    # NOTE: the one read a viewer's page may cause: NUT is a read-only protocol made for many clients,
    # and the dashboards of a server without the monitor (a follower) have no other source.
    live: LiveReads[dict[str, Any]] = request.app.state.live_reads
    reading = await live.read(("ups", ups_id), lambda: service.read_status(target, settings.ups_timeout))
    return reading.result() | reading.stamp()
