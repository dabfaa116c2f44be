"""Power rule pages: the list, adding, editing and deleting one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from mko.http.deps import SessionDep
from mko.http.routing import MkoRoute
from mko.inventory.clusters import list_clusters
from mko.platform.db.models.rules import ClusterAction, RuleTarget
from mko.platform.db.models.ups import PowerEvent
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.rules.actions import ACTIONS
from mko.rules.schemas import RuleCreate
from mko.rules.service import create_rule, delete_rule, get_rule, list_rules, update_rule
from mko.ups import service as ups_service
from mko.web.forms import FormDep, blank_to_none, field_errors
from mko.web.pages.render import _render, _see_other

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


def _rules_page(
    request: Request, session: SessionDep, status_code: int = 200, **context: Any
) -> HTMLResponse:
    upses = ups_service.list_ups(session)
    return _render(
        request,
        "rules.html",
        status_code,
        rules=list_rules(session),
        upses=upses,
        ups_options=[(u.id, u.name) for u in upses],
        cluster_options=[(c.id, c.name) for c in list_clusters(session)],
        events=[e.value for e in PowerEvent],
        actions=[a.value for a in ClusterAction],
        available_actions={a.value for a in ACTIONS},
        **context,
    )


_RULE_FIELDS = [
    "name", "ups_id", "cluster_id", "power_event", "cluster_action", "battery_threshold", "action_delay",
    "priority", "min_charge", "stable_for",
]  # fmt: skip


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, session: SessionDep, edit: int | None = None) -> HTMLResponse:
    """Power rules with their counters, and the form to add one (or, with ``?edit=ID``, to change one)."""
    if edit is None:
        return _rules_page(request, session)
    rule = get_rule(session, edit)
    form = {name: getattr(rule, name) for name in _RULE_FIELDS}
    form |= {"enabled": rule.enabled, "recover_after_wake": rule.recover_after_wake}
    form |= {"power_event": rule.power_event.value, "cluster_action": rule.cluster_action.value}
    form |= {"target": RuleTarget(rule.target).value}
    return _rules_page(request, session, form=form, editing=rule)


def _submitted(form: Mapping[str, Any]) -> dict[str, Any]:
    values = blank_to_none(form, _RULE_FIELDS)
    values["enabled"] = form.get("enabled") == "on"
    values["recover_after_wake"] = form.get("recover_after_wake") == "on"
    # The CLI's --fed-only and the API's "target": "fed_nodes", as one check box.
    values["target"] = (RuleTarget.FED_NODES if form.get("fed_only") == "on" else RuleTarget.CLUSTER).value
    return values


@router.post("/rules", response_class=HTMLResponse)
def add_rule(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Add a rule from the form, with the same checks as `ups create-rule`."""
    values = _submitted(form)
    try:
        data = RuleCreate.model_validate({k: v for k, v in values.items() if v is not None})
        create_rule(session, data)
    except (InputError, ValidationError) as exc:
        return _rules_page(request, session, 422, form=values, errors=field_errors(exc))
    except (ConflictError, NotFoundError) as exc:
        return _rules_page(request, session, 409, form=values, errors={"form": str(exc)})
    return _see_other("/rules")


@router.post("/rules/{rule_id:int}", response_class=HTMLResponse)
def edit_rule(request: Request, session: SessionDep, rule_id: int, form: FormDep) -> Response:
    """Save the edit form: the rule's settings replaced, its counters kept."""
    rule = get_rule(session, rule_id)
    values = _submitted(form)
    try:
        data = RuleCreate.model_validate({k: v for k, v in values.items() if v is not None})
        update_rule(session, rule_id, data)
    except (InputError, ValidationError) as exc:
        session.rollback()
        return _rules_page(request, session, 422, form=values, errors=field_errors(exc), editing=rule)
    return _see_other("/rules")


@router.post("/rules/{rule_id:int}/delete", response_class=HTMLResponse)
def remove_rule(session: SessionDep, rule_id: int) -> Response:
    """Delete a rule (a waiting execution of it will not fire)."""
    delete_rule(session, rule_id)
    return _see_other("/rules")
