"""The web UI's pages in the order they are mounted (the lab's page only with a lab)."""

from __future__ import annotations

from fastapi import APIRouter

from mko.web.pages import clusters, dashboard, nodes, operations, rules, schedules, shutdown, ups

__all__ = ["page_routers"]


def page_routers(*, lab: bool = False) -> list[APIRouter]:
    """Every page router, each to be mounted behind a web session."""
    routers = [
        dashboard.router,
        nodes.router,
        clusters.router,
        operations.router,
        schedules.router,
        ups.router,
        rules.router,
        shutdown.router,
    ]
    if lab:
        from mko.web.pages import lab as lab_page

        routers.append(lab_page.router)
    return routers
