"""Node pages: the list, a node, adding one, its WoL settings, waking."""

from __future__ import annotations

import enum
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from mko.http.deps import DbDep, SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.inventory.clusters import list_clusters
from mko.inventory.nodes import configure_wol, create_node, get_node, update_node
from mko.inventory.proxmox_hosts import list_hosts
from mko.inventory.read import SEARCH_MAX, NodeFilters, NodeState, page_of_nodes
from mko.inventory.schemas import NodeCreate, NodeUpdate, WolConfigure
from mko.inventory.snapshots import param_values
from mko.operations.kinds import WAKE_KIND_PREFIX
from mko.operations.records import last_steps_for_nodes, list_for_node
from mko.platform.db.models.access import Role
from mko.platform.db.models.inventory import NodeRole
from mko.platform.errors import ConflictError, InputError
from mko.platform.paging import MAX_OFFSET, Page
from mko.web.forms import (
    FormDep,
    blank_to_none,
    driver_fields,
    field_errors,
    method_choices,
    node_ids,
    params_from_form,
)
from mko.web.pages.render import _actor, _render, _see_other, _start_wake
from mko.wol.node_state import states_for
from mko.wol.status import wol_status_sync

__all__ = ["router"]

router = APIRouter(include_in_schema=False, route_class=MkoRoute)

StrEnumT = TypeVar("StrEnumT", bound=enum.StrEnum)

NODE_FORM_FIELDS = ["hostname", "ip_address", "cluster_id", "role", "ssh_user", "ssh_port", "wol_mac_address"]
WOL_FORM_FIELDS = [
    "wol_mac_address",
    "wol_method",
    "wol_port",
    "wol_broadcast_address",
    "proxmox_vm_id",
    "proxmox_host_id",
    "probe_port",
    "site",
]


# Rows per page of the web's node list: a page renders in milliseconds at any inventory size.
PAGE_ROWS = 100


def _nodes_page(
    request: Request,
    session: SessionDep,
    filters: NodeFilters,
    page: Page = Page(limit=PAGE_ROWS),
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    nodes, total = page_of_nodes(session, filters, page)
    clusters = list_clusters(session)
    last_wake = last_steps_for_nodes(session, (node.id for node in nodes), WAKE_KIND_PREFIX)
    query = filters.query_args()
    pages = {
        "previous": urlencode(query | {"offset": max(0, page.offset - PAGE_ROWS)}) if page.offset else None,
        "next": urlencode(query | {"offset": page.offset + len(nodes)})
        if page.offset + len(nodes) < total
        else None,
    }
    return _render(
        request,
        "nodes.html",
        status_code,
        nodes=nodes,
        total=total,
        shown=page.shown(len(nodes), total),
        pages=pages,
        filters=filters,
        states=[state.value for state in NodeState],
        clusters=clusters,
        cluster_options=[("", "—")] + [(c.id, c.name) for c in clusters],
        cluster_id=filters.cluster_id,
        last_wake=last_wake,
        live_states=states_for(session, request.app.state.settings, [node.id for node in nodes]),
        **context,
    )


def _choice(enum: type[StrEnumT], field: str, value: str) -> StrEnumT | None:
    if not value:
        return None
    try:
        return enum(value)
    except ValueError:
        raise InputError(field, f"must be one of {', '.join(enum)}") from None


@router.get("/nodes", response_class=HTMLResponse)
def nodes_page(
    request: Request,
    session: SessionDep,
    cluster_id: str = "",
    role: str = "",
    state: str = "",
    search: Annotated[str, Query(max_length=SEARCH_MAX)] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> HTMLResponse:
    """One page of nodes with reachability, filtered on the server (cluster, role, state, search);
    wake one or several. A blank filter means all."""
    if cluster_id and not cluster_id.isdigit():
        raise InputError("cluster_id", "must be a cluster id")
    filters = NodeFilters(
        cluster_id=int(cluster_id) if cluster_id else None,
        role=_choice(NodeRole, "role", role),
        state=_choice(NodeState, "state", state),
        search=search.strip() or None,
    )
    return _nodes_page(request, session, filters, Page(limit=PAGE_ROWS, offset=offset))


@router.post("/nodes", response_class=HTMLResponse)
def add_node(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Add a node from the form; errors are shown next to their field and nothing is stored."""
    values = blank_to_none(form, NODE_FORM_FIELDS)
    try:
        data = NodeCreate.model_validate({k: v for k, v in values.items() if v is not None})
        node = create_node(session, data)
    except (InputError, ValidationError) as exc:
        return _nodes_page(
            request, session, NodeFilters(), status_code=422, form=values, errors=field_errors(exc)
        )
    except ConflictError as exc:
        return _nodes_page(
            request, session, NodeFilters(), status_code=409, form=values, errors={"form": str(exc)}
        )
    return _see_other(f"/nodes/{node.id}")


@router.post("/nodes/wake")
async def wake_selected(request: Request, db: DbDep, settings: SettingsDep, form: FormDep) -> Response:
    """Wake the nodes ticked in the table, in one operation."""
    node_ids = [int(value) for value in form.getlist("node_id") if isinstance(value, str) and value.isdigit()]
    return await _start_wake(
        request,
        db,
        settings,
        lambda session, error: _nodes_page(
            request, session, NodeFilters(), status_code=409, errors={"wake": error}
        ),
        target_type="nodes",
        target_id=None,
        node_ids=node_ids,
    )


def _node_page(
    request: Request, session: SessionDep, node_id: int, status_code: int = 200, **context: Any
) -> HTMLResponse:
    node = get_node(session, node_id)
    context.setdefault("form", None)
    context.setdefault("depends_form", None)
    stored = param_values(node)
    shown = stored | (context["form"] or {})
    methods = method_choices()
    needed = sorted(d.depends_on_id for d in node.dependencies)
    return _render(
        request,
        "node_detail.html",
        status_code,
        node=node,
        power_fields=driver_fields(shown, {name: value is not None for name, value in stored.items()}),
        method_options=methods,
        method_labels={m["name"]: m["label"] for m in methods},
        depends_on=[get_node(session, needed_id) for needed_id in needed],
        wol=wol_status_sync(session, node_id),
        history=list_for_node(session, node_id),
        proxmox_host_options=[(h.id, f"{h.name} ({h.host})") for h in list_hosts(session)],
        **context,
    )


@router.get("/nodes/{node_id:int}", response_class=HTMLResponse)
def node_page(
    request: Request,
    session: SessionDep,
    node_id: int,
    saved: bool = False,
    unchanged: bool = False,
    depends_saved: bool = False,
) -> HTMLResponse:
    """One node: its Wake-on-LAN section (status, configure, send), its power order and its operation
    history."""
    return _node_page(
        request, session, node_id, saved=saved, unchanged=unchanged, depends_saved=depends_saved
    )


@router.post("/nodes/{node_id:int}/depends-on", response_class=HTMLResponse)
def set_node_depends_on(request: Request, session: SessionDep, node_id: int, form: FormDep) -> Response:
    """Save what the node depends on (``depends_on``, as the API's node update): ids, empty for none;
    an unknown id or a cycle is shown next to the field and nothing is stored."""
    text = str(form.get("depends_on") or "")
    try:
        update_node(session, node_id, NodeUpdate(depends_on=node_ids(text, "depends_on")))
    except (InputError, ValidationError) as exc:
        session.rollback()
        return _node_page(request, session, node_id, 422, depends_form=text, errors=field_errors(exc))
    return _see_other(f"/nodes/{node_id}?depends_saved=1#power-order")


@router.post("/nodes/{node_id:int}/wol/configure", response_class=HTMLResponse)
def configure_node(request: Request, session: SessionDep, node_id: int, form: FormDep) -> Response:
    """Save the WoL form: it shows every field, so every field is set (an emptied field is cleared)."""
    values = blank_to_none(form, WOL_FORM_FIELDS)
    values["wol_enabled"] = form.get("wol_enabled") == "on"
    values["is_virtual_node"] = form.get("kind") == "virtual"
    if values["wol_method"] is None:  # the service infers it from the kind (physical or virtual)
        del values["wol_method"]
    if values["wol_port"] is None:
        values["wol_port"] = 9
    values |= params_from_form(form)  # every method's own settings, from the drivers' models
    try:
        data = WolConfigure.model_validate(values)
        principal = getattr(request.state, "principal", None)
        admin = principal is not None and principal.role == Role.ADMIN
        _, operation = configure_wol(session, node_id, data, _actor(request), may_rebind_secrets=admin)
    except (InputError, ValidationError) as exc:
        return _node_page(request, session, node_id, 422, form=values, errors=field_errors(exc))
    return _see_other(f"/nodes/{node_id}?{'unchanged' if operation is None else 'saved'}=1")


@router.post("/nodes/{node_id:int}/wol/wake", response_class=HTMLResponse)
async def wake_node(
    request: Request, db: DbDep, settings: SettingsDep, node_id: int, form: FormDep
) -> Response:
    """Send wake packets to one node, optionally waiting until it is up; follow it on its operation page."""
    return await _start_wake(
        request,
        db,
        settings,
        lambda session, error: _node_page(request, session, node_id, 409, wake_error=error),
        wait=form.get("wait") == "on",
        target_type="node",
        target_id=node_id,
    )
