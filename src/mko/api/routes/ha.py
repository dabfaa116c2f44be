"""GET /api/cluster-status: the database, the serve instances (online or not) and the leader."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mko.ha import election as ha_election
from mko.http.deps import SessionDep, SettingsDep
from mko.http.routing import MkoRoute

router = APIRouter(tags=["high availability"], route_class=MkoRoute)


@router.get("/api/cluster-status")
def cluster_status(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Which instances share this database, which are online, and which one leads."""
    return ha_election.cluster_status(session, settings)
