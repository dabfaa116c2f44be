"""The UPS page: every UPS with its last known status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mko.http.deps import SessionDep
from mko.http.leader import ups_monitor
from mko.http.routing import MkoRoute
from mko.inventory.feeds import ups_feeds
from mko.ups import outages
from mko.ups import service as ups_service
from mko.web.pages.render import _render

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


def _ups_statuses(request: Request, session: SessionDep) -> list[dict[str, Any]]:
    """What the server's UPS monitor last read of each UPS (None where it has not read it)."""
    monitor = ups_monitor(request.app)
    rows = []
    fed = ups_feeds(session)
    for ups in ups_service.list_ups(session):
        snapshot = monitor.snapshot(ups.id) if monitor is not None else None
        history = monitor.charge_history(ups.id) if monitor is not None else []
        rows.append(
            {
                "ups": ups,
                "status": snapshot,
                "sparkline": sparkline_points(history),
                "feeds": fed.get(ups.id, []),
            }
        )
    return rows


def sparkline_points(history: list[tuple[datetime, float]]) -> str:
    """SVG polyline points (viewBox 0 0 100 30) of the last hour's charge; "" with fewer than 2 samples."""
    if len(history) < 2:
        return ""
    end = history[-1][0]
    points = []
    for at, charge in history:
        x = 100 - min(3600.0, (end - at).total_seconds()) / 36
        y = 30 - max(0.0, min(100.0, charge)) * 0.3
        points.append(f"{x:.1f},{y:.1f}")
    return " ".join(points)


@router.get("/ups", response_class=HTMLResponse)
def ups_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Every UPS with its live status, and the event history."""
    return _render(
        request,
        "ups.html",
        upses=_ups_statuses(request, session),
        events=ups_service.list_events(session, limit=50),
        outages=[outages.outage_doc(session, o) for o in outages.list_outages(session, limit=20)],
    )
