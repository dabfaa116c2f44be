"""GET /metrics: every mko series in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mko.http import metrics
from mko.http.routing import MkoRoute

__all__ = ["router"]

router = APIRouter(tags=["monitoring"], route_class=MkoRoute)


@router.get("/metrics", response_class=Response)
def prometheus_metrics(request: Request) -> Response:
    """Every mko series in the Prometheus text format (see docs/schedules-discovery-monitoring.md)."""
    return Response(metrics.render(request.app.state.metrics_registry), media_type=metrics.CONTENT_TYPE)
