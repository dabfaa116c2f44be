"""The server's own loops: the scheduler and the reachability refresher, and the state /metrics reads.

:func:`install` puts them on ``app.state`` when the app is built (``scheduler``, ``refresher``,
``metrics_registry``); :func:`start` and :func:`stop` run them for the app's lifespan.
Runs a schedule starts are background tasks of the app, so they end (recorded as cancelled) with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from typing import Any

from fastapi import FastAPI

from mko.http.background import launch
from mko.http.metrics import MetricsCollector, make_registry
from mko.platform.settings import Settings
from mko.wiring import Wiring

__all__ = ["install", "start", "stop"]


def install(app: FastAPI, wiring: Wiring) -> None:
    """Create the scheduler, the refresher and the metrics registry on ``app.state``."""

    def ups_snapshots() -> list[dict[str, Any]]:
        # The UPS monitor is started in the lifespan (None when disabled or running elsewhere).
        monitor = getattr(app.state, "ups_monitor", None)
        if monitor is None:
            return []
        return [doc for ups_id in monitor.watched() if (doc := monitor.snapshot(ups_id)) is not None]

    app.state.metrics_registry = make_registry(MetricsCollector(wiring.session_factory, ups_snapshots))
    app.state.scheduler = wiring.scheduler(spawn=lambda work: launch(app, work))
    app.state.refresher = wiring.refresher()
    app.state.periodic_tasks = set()


def _raise_descriptor_limit() -> None:
    # NOTE: probing 1,000 nodes at once needs ~1,000 descriptors; the usual soft limit is 1,024 while
    # the hard limit is far higher, and a server may raise its own soft limit up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def start(app: FastAPI) -> None:
    """Start the loops the settings ask for (scheduler_enabled, reachability_interval > 0)."""
    settings: Settings = app.state.settings
    _raise_descriptor_limit()
    tasks: set[asyncio.Task[Any]] = app.state.periodic_tasks
    if settings.scheduler_enabled:
        tasks.add(asyncio.create_task(app.state.scheduler.run(), name="mko-scheduler"))
    if settings.reachability_interval > 0:
        tasks.add(asyncio.create_task(app.state.refresher.run(), name="mko-reachability"))


async def stop(app: FastAPI) -> None:
    """Stop the loops (the runs they started are cancelled with the app's other background tasks)."""
    tasks: set[asyncio.Task[Any]] = app.state.periodic_tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()
