"""Proxmox hosts: ``/api/proxmox-hosts`` CRUD and ``POST /api/proxmox-hosts/{id}/test``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from mko.http.deps import DbDep, SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.http.security import AdminDep
from mko.inventory import proxmox_hosts
from mko.inventory.schemas import ProxmoxHostCreate, ProxmoxHostPublic, ProxmoxHostUpdate

router = APIRouter(prefix="/api/proxmox-hosts", tags=["proxmox"], route_class=MkoRoute)


def _public(session: SessionDep, host_id: int) -> ProxmoxHostPublic:
    host = proxmox_hosts.get_host(session, host_id)
    return ProxmoxHostPublic.of(host, proxmox_hosts.node_counts(session).get(host.id, 0))


@router.get("")
def list_hosts(session: SessionDep) -> list[ProxmoxHostPublic]:
    """All Proxmox hosts (secrets are reported as set, never shown)."""
    counts = proxmox_hosts.node_counts(session)
    return [ProxmoxHostPublic.of(h, counts.get(h.id, 0)) for h in proxmox_hosts.list_hosts(session)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_host(session: SessionDep, settings: SettingsDep, body: ProxmoxHostCreate) -> ProxmoxHostPublic:
    """Add a Proxmox host: an API token (token_id + secret) or a user and password."""
    return _public(session, proxmox_hosts.create_host(session, settings, body).id)


@router.get("/{host_id:int}")
def get_host(session: SessionDep, host_id: int) -> ProxmoxHostPublic:
    """One Proxmox host."""
    return _public(session, host_id)


@router.patch("/{host_id:int}")
def update_host(
    session: SessionDep, settings: SettingsDep, admin: AdminDep, host_id: int, body: ProxmoxHostUpdate
) -> ProxmoxHostPublic:
    """Change the fields sent (e.g. a new token secret); a new host, port or TLS trust needs the
    secret again in the same request, unless the caller is an admin."""
    proxmox_hosts.update_host(session, settings, host_id, body, may_rebind_secret=admin)
    return _public(session, host_id)


@router.delete("/{host_id:int}", status_code=status.HTTP_204_NO_CONTENT)
def delete_host(session: SessionDep, host_id: int) -> Response:
    """Remove a host no node uses (409 naming the nodes otherwise)."""
    proxmox_hosts.delete_host(session, host_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{host_id:int}/test")
async def test_host(db: DbDep, settings: SettingsDep, host_id: int) -> dict[str, Any]:
    """Log in as mko would and read the version, nodes and guests (502 with Proxmox's reason if not)."""
    host = await db.run(lambda session: proxmox_hosts.host_login(session, settings, host_id))
    return await proxmox_hosts.check_login(host)
