"""MAC collection, SSH host-key trust and the Ansible inventory: ``POST /api/nodes/wol/collect-mac`` …

Node ids are ``{node_id:int}`` in every path, so ``/api/nodes/wol/collect-mac`` can never be taken for a
``/api/nodes/{node_id}/…`` path.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from mko.http.deps import ActorDep, DbDep, SessionDep, SettingsDep
from mko.http.live import LiveReads
from mko.http.routing import MkoRoute
from mko.http.security import PrincipalDep, require_operator_for
from mko.inventory.trust import node_target, trust_node
from mko.nic.ansible import write_inventory
from mko.nic.collect import collect_macs
from mko.platform.db.models.operations import OperationStatus
from mko.platform.validation import InputModel
from mko.ssh.host_keys import HostKeyInfo, scan_host_key

router = APIRouter(prefix="/api", route_class=MkoRoute)


class CollectMacBody(InputModel):
    """Which nodes to read (all when ``node_ids`` is absent or null)."""

    node_ids: list[int] | None = Field(
        default=None, min_length=1, description="node ids, e.g. [1, 2, 3]; null = all"
    )
    overwrite: bool = Field(default=False, description="replace a stored MAC that differs from the node's")


class CollectMacResponse(BaseModel):
    """The collection's operation and one row per node."""

    operation_id: int
    status: OperationStatus
    summary: str
    nodes: list[dict[str, Any]]
    operation_url: str


class TrustBody(InputModel):
    """Optional checks before a node's host key is recorded."""

    fingerprint: str | None = Field(
        default=None, description="SHA256:… read on the node's console; the presented key must match it"
    )
    replace: bool = Field(default=False, description="replace a different key recorded earlier")


@router.post("/nodes/wol/collect-mac", tags=["wake-on-lan"])
async def collect_mac(
    db: DbDep, settings: SettingsDep, actor: ActorDep, body: CollectMacBody | None = None
) -> CollectMacResponse:
    """Read each node's interfaces over SSH (in parallel) and store the MAC, interface and prefix."""
    body = body or CollectMacBody()
    operation = await collect_macs(db.factory, settings, body.node_ids, overwrite=body.overwrite, actor=actor)
    return CollectMacResponse(
        operation_id=operation.id,
        status=operation.status,
        summary=operation.summary,
        nodes=operation.result.get("nodes", []),
        operation_url=f"/api/operations/{operation.id}",
    )


@router.get("/nodes/{node_id:int}/ssh/host-key", tags=["nodes"])
async def host_key(
    request: Request, db: DbDep, settings: SettingsDep, principal: PrincipalDep, node_id: int
) -> dict[str, Any]:
    """The host key the node presents now and whether it is trusted, unknown or changed (no login).

    It connects to the node, so it needs the operator role; one scan per node at a time, at most once
    per live_read_interval (``checked_at``, ``age_seconds``)."""
    target = await db.run(lambda session: node_target(session, settings, node_id))
    await require_operator_for(request, principal, "scanning a node's SSH host key")
    live: LiveReads[HostKeyInfo] = request.app.state.live_reads
    reading = await live.read(("host-key", node_id), lambda: scan_host_key(target, settings))
    return reading.result().as_dict() | reading.stamp()


@router.post("/nodes/{node_id:int}/ssh/trust", tags=["nodes"])
async def trust(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    actor: ActorDep,
    node_id: int,
    body: TrustBody | None = None,
) -> dict[str, Any]:
    """Record the node's host key in the orchestrator's known_hosts and return its fingerprint."""
    body = body or TrustBody()
    result = await trust_node(
        db.factory, settings, node_id, actor=actor, expected=body.fingerprint, replace=body.replace
    )
    live: LiveReads[HostKeyInfo] = request.app.state.live_reads
    live.forget(("host-key", node_id))  # its status changed: the next scan must not show the old one
    return result


@router.post("/ansible/inventory", tags=["ansible"])
def ansible_inventory_write(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Write the Ansible inventory file now (it is also rewritten whenever a node changes)."""
    return write_inventory(session, settings).as_dict()
