"""GET /api/cluster-status: the database, the serve instances (online or not) and the leader."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mko import ha as mko_ha
from mko.api.deps import SessionDep, SettingsDep
from mko.api.routing import MkoRoute

router = APIRouter(tags=["high availability"], route_class=MkoRoute)


@router.get("/api/cluster-status")
def cluster_status(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Which instances share this database, which are online, and which one leads."""
    return mko_ha.cluster_status(session, settings)
