"""Power rule pages: the list and adding one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from mko.http.deps import SessionDep
from mko.http.routing import MkoRoute
from mko.inventory.clusters import list_clusters
from mko.platform.db.models.rules import ClusterAction
from mko.platform.db.models.ups import PowerEvent
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.rules.actions import ACTIONS
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule, list_rules
from mko.ups import service as ups_service
from mko.web.forms import FormDep, blank_to_none, field_errors
from mko.web.pages.render import _render, _see_other

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


def _rules_page(
    request: Request, session: SessionDep, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return _render(
        request,
        "rules.html",
        status_code,
        rules=list_rules(session),
        upses=ups_service.list_ups(session),
        clusters=list_clusters(session),
        events=[e.value for e in PowerEvent],
        actions=[a.value for a in ClusterAction],
        available_actions={a.value for a in ACTIONS},
        **context,
    )


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Power rules with their counters, and the form to add one."""
    return _rules_page(request, session)


@router.post("/rules", response_class=HTMLResponse)
def add_rule(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Add a rule from the form, with the same checks as `ups create-rule`."""
    values = blank_to_none(
        form,
        ["name", "ups_id", "cluster_id", "power_event", "cluster_action", "battery_threshold", "action_delay",
         "priority", "min_charge", "stable_for"],
    )  # fmt: skip
    values["enabled"] = form.get("enabled") == "on"
    values["recover_after_wake"] = form.get("recover_after_wake") == "on"
    try:
        data = RuleCreate.model_validate({k: v for k, v in values.items() if v is not None})
        create_rule(session, data)
    except (InputError, ValidationError) as exc:
        return _rules_page(request, session, 422, form=values, errors=field_errors(exc))
    except (ConflictError, NotFoundError) as exc:
        return _rules_page(request, session, 409, form=values, errors={"form": str(exc)})
    return _see_other("/rules")
