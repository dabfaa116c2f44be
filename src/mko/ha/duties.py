"""The leader duties of `mko serve`: the UPS monitor with its rule engine, the scheduler, failover.

:class:`LeaderDuties` registers the instance and runs its :class:`mko.ha.election.LeaderElection`; the
duties start when this instance is elected (at once with SQLite) and stop as soon as it is not the
leader any more. Followers serve the API and the web UI only. The duties are:

* the UPS monitor, with the rule engine as its event sink, for as long as the leadership lasts;
* the server's loops: the scheduler (``scheduler_enabled``) and the reachability refresher
  (``reachability_interval`` > 0);
* closing the operations of processes that died (a killed CLI), once per operation heartbeat;
* with PostgreSQL, taking over what stopped or dead instances left (mko.ha.failover).

It knows no web framework: the server hands in how the monitor is built, its loops, and how background
work is run (work a schedule or a take-over starts ends with the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from mko.ha.election import LeaderElection
from mko.ha.failover import Adopter, Spawn, take_over
from mko.operations import ownership
from mko.platform.db.session import is_postgresql
from mko.platform.settings import Settings
from mko.ups.monitor import UpsMonitor, start_monitor

__all__ = ["LeaderDuties", "Loop", "MonitorFactory"]

log = logging.getLogger("mko.ha")


class MonitorFactory(Protocol):
    """Builds the UPS monitor and the rule engine it hands its events to (mko.wiring.Wiring.ups_monitor)."""

    def __call__(self, *, ha: bool) -> tuple[UpsMonitor, Adopter]:
        """The monitor and its rule engine; ``ha``: another instance may carry on what this one leaves."""
        ...


class Loop(Protocol):
    """A loop of the server that runs until cancelled (the scheduler, the reachability refresher)."""

    async def run(self) -> None:
        """Run until cancelled."""


class LeaderDuties:
    """One server instance's part in the election, and what it runs while it leads; start() / stop().

    ``ups_monitor`` and ``rule_engine`` are the running ones while this instance leads (None otherwise,
    or when the monitor is disabled or runs elsewhere).
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        monitors: MonitorFactory,
        *,
        scheduler: Loop,
        refresher: Loop,
        spawn: Spawn,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.monitors = monitors
        self.scheduler = scheduler
        self.refresher = refresher
        self.spawn = spawn
        self.ha = is_postgresql(settings.database_url)
        self.ups_monitor: UpsMonitor | None = None
        self.rule_engine: Adopter | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()
        self.election = LeaderElection(settings, session_factory, on_elected=self._lead, on_lost=self._follow)

    async def start(self) -> None:
        """Register this instance and take part in the election (the server's start)."""
        # What killed processes left open is closed (their process is gone); an operation a live CLI
        # still runs is left to it. With PostgreSQL, failover handles the operations of serve instances.
        await asyncio.to_thread(self._close_orphaned)
        await self.election.start()

    async def stop(self) -> None:
        """Stop the duties (if leading), leave the election, mark this instance stopped."""
        await self.election.stop()
        await self._stop_loops()  # the election stopped them unless start() failed half-way

    # -------------------------------------------------------------- leading and following

    async def _lead(self) -> None:
        self._start_loops()
        # The UPS monitor and rule engine live as long as the leadership (None: disabled or run elsewhere).
        monitor, rules = self.monitors(ha=self.ha)
        self.ups_monitor = await start_monitor(monitor)
        self.rule_engine = rules if self.ups_monitor is not None else None
        self._tasks.add(asyncio.create_task(self._close_orphaned_loop(), name="mko-operation-owners"))
        if self.ha:
            self._tasks.add(asyncio.create_task(self._take_over_loop(), name="mko-failover"))

    async def _follow(self) -> None:
        await _cancel(self._tasks)
        monitor, self.ups_monitor, self.rule_engine = self.ups_monitor, None, None
        if monitor is not None:
            # With PostgreSQL another instance carries the open rule executions on (mko.ha.failover).
            await monitor.stop(handover=self.ha)
        await self._stop_loops()

    def _start_loops(self) -> None:
        """The loops the settings ask for (scheduler_enabled, reachability_interval > 0)."""
        _raise_descriptor_limit()
        if self.settings.scheduler_enabled:
            self._loops.add(asyncio.create_task(self.scheduler.run(), name="mko-scheduler"))
        if self.settings.reachability_interval > 0:
            self._loops.add(asyncio.create_task(self.refresher.run(), name="mko-reachability"))

    async def _stop_loops(self) -> None:
        # The runs they started are background work of the server, cancelled when it stops.
        await _cancel(self._loops)

    # -------------------------------------------------------------- the duties' own loops

    def _close_orphaned(self) -> None:
        with self.session_factory() as session:
            ownership.close_orphaned(session)

    async def _close_orphaned_loop(self) -> None:
        """Close operations whose owner died while this server runs (a killed CLI), once per heartbeat."""
        while True:
            await asyncio.sleep(self.settings.operation_heartbeat_interval)
            try:
                await asyncio.to_thread(self._close_orphaned)
            except Exception:  # the database may be briefly away; the next round retries
                log.exception("could not close the operations of processes that are gone")

    async def _take_over_loop(self) -> None:
        election = self.election
        while True:
            since = election.leader_since
            if since is not None:
                try:
                    await take_over(
                        self.session_factory,
                        self.settings,
                        election.name,
                        since,
                        engine=self.rule_engine,
                        spawn=self.spawn,
                    )
                except Exception:  # the database may be briefly away; the next round retries
                    log.exception("could not take over the operations of stopped instances")
            await asyncio.sleep(self.settings.ha_check_interval)


async def _cancel(tasks: set[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()


def _raise_descriptor_limit() -> None:
    # NOTE: probing 1,000 nodes at once needs ~1,000 descriptors; the usual soft limit is 1,024 while
    # the hard limit is far higher, and a server may raise its own soft limit up to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
