"""What every page shares: the templates, the static files, rendering a page for the
signed-in user, and starting a wake from any form."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from mko.access.principal import allows
from mko.http.background import launch_wake
from mko.http.deps import DbDep, SettingsDep
from mko.operations.records import Actor
from mko.platform.db.models.access import Role
from mko.platform.db.models.inventory import NodeRole
from mko.platform.errors import ConflictError, InputError
from mko.power.registry import DRIVERS
from mko.wol.wake import make_schedule, start_requested_wake

__all__ = ["STATIC_DIR", "templates"]


HERE = Path(__file__).parent.parent  # the web package: templates/ and static/
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")

# What a failed connection or a NUT error means, in words a person acts on; the raw text stays available
# under "details" on the page. First match wins.
_HUMAN_ERRORS = (
    (("Errno 111", "Connection refused", "Connect call failed"), "nothing answers on that port"),
    (("Errno 113", "No route to host"), "there is no route to that host"),
    (("Errno 101", "Network is unreachable"), "this machine has no route to that network"),
    (("Name or service not known", "Errno -2", "Errno -3", "Temporary failure in name resolution"),
     "its host name does not resolve"),
    (("timed out", "timeout", "Timeout"), "it did not answer in time"),
    (("UNKNOWN-UPS",), "upsd does not know that UPS name"),
    (("ACCESS-DENIED", "PASSWORD-REQUIRED", "USERNAME-REQUIRED"), "upsd refused the login"),
    (("DATA-STALE",), "upsd's data is stale: its driver lost the UPS"),
    (("DRIVER-NOT-CONNECTED",), "upsd's driver is not connected to the UPS"),
    (("Host key", "host key"), "its SSH host key is not trusted yet (`mko node trust`)"),
)  # fmt: skip


def human_error(text: object) -> str:
    """A short sentence for an error (``[Errno 111] Connection refused`` → "nothing answers …")."""
    raw = str(text or "")
    for needles, sentence in _HUMAN_ERRORS:
        if any(needle in raw for needle in needles):
            return sentence
    return re.sub(r"\[Errno -?\d+\]\s*", "", raw).strip().rstrip(".") or "unknown error"


templates.env.filters["human_error"] = human_error


def _actor(request: Request) -> Actor:
    principal = getattr(request.state, "principal", None)
    name = f"web:{principal.name}" if principal is not None else "web"
    return Actor(name=name, source=request.client.host if request.client else "")


def _render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("settings", request.app.state.settings)
    # Form pages re-render with what was typed and the errors next to each field.
    context.setdefault("form", {})
    context.setdefault("errors", {})
    principal = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("can_operate", principal is not None and allows(principal.role, Role.OPERATOR))
    context.setdefault("roles", [r.value for r in NodeRole])
    context.setdefault("methods", list(DRIVERS.names()))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def _start_wake(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    page: Callable[[Session, str], HTMLResponse],
    *,
    wait: bool = False,
    **target: Any,
) -> Response:
    """Start a wake from a form and go to its operation page, or show ``page`` again with the reason
    it cannot start (the database work in worker threads, like every async handler's)."""
    actor = _actor(request)
    try:
        schedule = make_schedule(settings, wait=wait)
        prepared = await db.run(
            lambda session: start_requested_wake(session, settings, schedule=schedule, actor=actor, **target)
        )
    except (InputError, ConflictError) as exc:
        error = str(exc)
        return await db.run(lambda session: page(session, error))
    if not prepared.coalesced:
        launch_wake(request.app, settings, prepared)
    return _see_other(f"/operations/{prepared.operation_id}")
