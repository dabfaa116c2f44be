"""The leader duties on the app: what they run, built when the app is, and the lifespan's start and stop.

The duties themselves (the UPS monitor with its rule engine, the scheduler, the reachability refresher,
failover) are :class:`mko.ha.duties.LeaderDuties`. :func:`install` builds them with the server's parts
and puts on ``app.state``: ``scheduler``, ``refresher``, ``metrics_registry``, ``leader_duties`` and its
``election``. What a schedule or a take-over starts is a background task of the app, so it ends
(recorded as cancelled) with it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from mko.ha.duties import LeaderDuties
from mko.http.background import launch
from mko.http.metrics import MetricsCollector, make_registry
from mko.ups.monitor import UpsMonitor
from mko.wiring import Wiring

__all__ = ["install", "start", "stop", "ups_monitor"]


def install(app: FastAPI, wiring: Wiring) -> None:
    """Create the scheduler, the refresher, the metrics registry and the leader duties on ``app.state``."""

    def ups_snapshots() -> list[dict[str, Any]]:
        monitor = ups_monitor(app)
        if monitor is None:
            return []
        return [doc for ups_id in monitor.watched() if (doc := monitor.snapshot(ups_id)) is not None]

    app.state.metrics_registry = make_registry(MetricsCollector(wiring.session_factory, ups_snapshots))
    app.state.scheduler = wiring.scheduler(spawn=lambda work: launch(app, work))
    app.state.refresher = wiring.refresher()
    duties = LeaderDuties(
        wiring.settings,
        wiring.session_factory,
        wiring.ups_monitor,
        scheduler=app.state.scheduler,
        refresher=app.state.refresher,
        spawn=lambda work: launch(app, work),
    )
    app.state.leader_duties = duties
    app.state.election = duties.election


def ups_monitor(app: FastAPI) -> UpsMonitor | None:
    """The UPS monitor this instance runs: None unless it leads (and the monitor is enabled and not run
    by another process on the same database)."""
    duties: LeaderDuties | None = getattr(app.state, "leader_duties", None)
    return duties.ups_monitor if duties is not None else None


async def start(app: FastAPI) -> None:
    """Register this instance and take part in the election (the lifespan's start)."""
    await app.state.leader_duties.start()


async def stop(app: FastAPI) -> None:
    """Stop the leader duties (if any), leave the election, mark this instance stopped."""
    await app.state.leader_duties.stop()
