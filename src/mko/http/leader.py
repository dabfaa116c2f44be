"""The leader duties of `mko serve`: the UPS monitor with its rule engine, the scheduler, failover.

:func:`start` registers the instance and starts its :class:`mko.ha.election.LeaderElection`; the duties start
when this instance is elected (at once with SQLite) and stop as soon as it is not the leader any more.
Followers serve the API and the web UI only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from mko.ha.election import LeaderElection
from mko.ha.failover import take_over
from mko.http import periodic
from mko.http.background import launch
from mko.operations import ownership
from mko.platform.db.session import is_postgresql
from mko.platform.settings import Settings
from mko.ups.monitor import start_monitor

__all__ = ["start", "stop"]

log = logging.getLogger("mko.ha")


async def start(app: FastAPI) -> None:
    """Register this instance and take part in the election (the lifespan's start)."""
    settings: Settings = app.state.settings
    factory: sessionmaker[Session] = app.state.session_factory
    ha = is_postgresql(settings.database_url)
    # What killed processes left open is closed (their process is gone); an operation a live CLI
    # still runs is left to it. With PostgreSQL, failover handles the operations of serve instances.
    await asyncio.to_thread(_close_orphaned, factory)
    app.state.ha_tasks = set()

    async def lead() -> None:
        periodic.start(app)  # the scheduler and the reachability refresher
        # The UPS monitor and rule engine live as long as the leadership (None: disabled or run elsewhere).
        monitor, rules = app.state.wiring.ups_monitor(ha=ha)
        app.state.ups_monitor = await start_monitor(monitor)
        app.state.rule_engine = rules if app.state.ups_monitor is not None else None
        reaper = asyncio.create_task(_close_orphaned_loop(app), name="mko-operation-owners")
        app.state.ha_tasks.add(reaper)
        if ha:
            task = asyncio.create_task(_take_over_loop(app), name="mko-failover")
            app.state.ha_tasks.add(task)

    async def follow() -> None:
        tasks: set[asyncio.Task[Any]] = app.state.ha_tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()
        monitor, app.state.ups_monitor, app.state.rule_engine = app.state.ups_monitor, None, None
        if monitor is not None:
            # With PostgreSQL another instance carries the open rule executions on (mko.ha.failover).
            await monitor.stop(handover=ha)
        await periodic.stop(app)

    election = LeaderElection(settings, factory, on_elected=lead, on_lost=follow)
    app.state.election = election
    await election.start()


def _close_orphaned(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        ownership.close_orphaned(session)


async def _close_orphaned_loop(app: FastAPI) -> None:
    """Close operations whose owner died while this server runs (a killed CLI), once per heartbeat."""
    settings: Settings = app.state.settings
    while True:
        await asyncio.sleep(settings.operation_heartbeat_interval)
        try:
            await asyncio.to_thread(_close_orphaned, app.state.session_factory)
        except Exception:  # the database may be briefly away; the next round retries
            log.exception("could not close the operations of processes that are gone")


async def _take_over_loop(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    election: LeaderElection = app.state.election
    while True:
        since = election.leader_since
        if since is not None:
            try:
                await take_over(
                    app.state.session_factory,
                    settings,
                    election.name,
                    since,
                    engine=getattr(app.state, "rule_engine", None),
                    spawn=lambda work: launch(app, work),
                )
            except Exception:  # the database may be briefly away; the next round retries
                log.exception("could not take over the operations of stopped instances")
        await asyncio.sleep(settings.ha_check_interval)


async def stop(app: FastAPI) -> None:
    """Stop the leader duties (if any), leave the election, mark this instance stopped."""
    election: LeaderElection | None = getattr(app.state, "election", None)
    if election is not None:
        await election.stop()
    else:  # pragma: no cover - start() failed half-way
        with contextlib.suppress(Exception):
            await periodic.stop(app)
