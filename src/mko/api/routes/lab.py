"""The virtual lab's controls, present only when the server runs with ``mko serve --lab``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from mko.http.deps import SessionDep
from mko.http.routing import MkoRoute
from mko.lab.control import FLAP_MIN_PERIOD, LabControl, lab_status
from mko.platform.validation import InputModel

router = APIRouter(prefix="/api/lab", tags=["lab"], route_class=MkoRoute)


class BatteryChange(InputModel):
    """A new battery charge for the lab UPS."""

    percent: float = Field(
        ge=0, le=100, description="charge; on battery, 20 or less reports LB, 0 cuts power"
    )


class Flap(InputModel):
    """Mains going off and on."""

    seconds: float = Field(ge=1, le=3600, description="how long mains flaps")
    period: float = Field(
        default=FLAP_MIN_PERIOD, ge=FLAP_MIN_PERIOD, le=600, description="seconds per change"
    )


def lab_control(request: Request) -> LabControl:
    """The lab this server serves (set by create_app(lab=…))."""
    control: LabControl = request.app.state.lab
    return control


@router.get("")
def get_lab(request: Request, session: SessionDep) -> dict[str, Any]:
    """Nodes (power, MicroK8s, Ready, cordoned), the UPS as upsd serves it, running and latest operations."""
    return lab_status(lab_control(request), session)


@router.post("/power-fail")
def power_fail(request: Request) -> dict[str, Any]:
    """Mains fails: the lab UPS goes on battery; answers once upsd serves OB."""
    return lab_control(request).power_fail()


@router.post("/power-restore")
def power_restore(request: Request) -> dict[str, Any]:
    """Mains returns: the lab UPS goes on line; ends a flap."""
    return lab_control(request).power_restore()


@router.post("/battery")
def set_battery(request: Request, body: BatteryChange) -> dict[str, Any]:
    """Set the battery charge; on battery at 0 % every node still on loses power."""
    return lab_control(request).battery(body.percent)


@router.post("/flap")
def flap(request: Request, body: Flap) -> dict[str, Any]:
    """Toggle mains every ``period`` seconds for ``seconds``, ending on line (409 while one runs)."""
    return lab_control(request).flap(body.seconds, body.period)
