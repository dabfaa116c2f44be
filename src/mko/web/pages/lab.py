"""The web UI's lab page: watch the virtual cluster and cut or restore its power (``mko serve --lab``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mko.http.deps import SessionDep
from mko.http.routing import MkoRoute
from mko.lab.control import lab_status
from mko.platform.errors import InputError
from mko.web.forms import FormDep
from mko.web.pages.render import _render, _see_other

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


@router.get("/lab", response_class=HTMLResponse)
def lab_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Nodes, UPS and operations, refreshed live; buttons drive the lab UPS through the real upsd."""
    return _render(request, "lab.html", lab=lab_status(request.app.state.lab, session))


@router.post("/lab/{action}", response_class=HTMLResponse)
def lab_action(request: Request, session: SessionDep, action: str, form: FormDep) -> Response:
    """power-fail, power-restore, battery (percent) or flap (seconds)."""
    control = request.app.state.lab
    try:
        if action == "power-fail":
            control.power_fail()
        elif action == "power-restore":
            control.power_restore()
        elif action == "battery":
            control.battery(_number(form.get("percent"), "percent"))
        elif action == "flap":
            control.flap(_number(form.get("seconds"), "seconds"))
        else:
            return Response(status_code=404)
    except InputError as exc:
        status = lab_status(control, session)
        return _render(request, "lab.html", 422, lab=status, form=dict(form), errors={exc.field: exc.message})
    return _see_other("/lab")


def _number(value: object, field: str) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise InputError(field, "must be a number") from None
