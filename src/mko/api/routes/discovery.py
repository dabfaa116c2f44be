"""Network discovery: live hosts of a subnet with their MACs, names, open ports and inventory match."""

from __future__ import annotations

from fastapi import APIRouter

from mko.http.deps import ActorDep, DbDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.inventory import discovery
from mko.inventory.discovery import DiscoverRequest, DiscoveryResult

router = APIRouter(prefix="/api", tags=["discovery"], route_class=MkoRoute)


@router.post("/discover")
async def discover(
    db: DbDep, settings: SettingsDep, actor: ActorDep, body: DiscoverRequest
) -> DiscoveryResult:
    """Scan a subnet (TCP probes to ``ports``, optional ICMP, the neighbour table for MACs); with
    ``add`` and ``cluster_id``, add the hosts not yet in the inventory as nodes (one operation)."""
    return await discovery.discover_and_add(db.factory, settings, body, actor)
