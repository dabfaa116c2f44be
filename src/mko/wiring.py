"""The one place that connects mko's domains for a process; importing it does nothing.

:func:`wire` is called by ``mko.app.create_app`` (the server), the CLI's session opener
(``mko.cli.common.open_wiring``) and the lab daemon, and by the tests' database fixture. It

* builds the engine and the session factory of ``settings.database_url``;
* sets the process-wide policy of operation owners (their heartbeat, ``mko.operations.ownership``);
* attaches the session hooks: node changes committed through this factory refresh the Ansible
  inventory of these settings (:class:`InventoryRefresher`; the writer, ``mko.nic.ansible``, is loaded
  at the first commit that changed a node, so a command that changes none never loads it);

and hands out the long-lived parts, connected: :meth:`Wiring.ups_monitor` makes the rule engine the UPS
monitor's event sink (the monitor knows no rules), :meth:`Wiring.scheduler` the scheduler, whose actions
are the static table ``mko.schedules.actions.RUNNERS`` (nothing registers itself at import).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from mko.operations import ownership
from mko.platform.db.models.inventory import Node
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings

if TYPE_CHECKING:
    from mko.rules.engine import RuleEngine
    from mko.schedules.scheduler import Scheduler
    from mko.ups.monitor import UpsMonitor
    from mko.wol.reachability import Refresher

__all__ = ["InventoryRefresher", "Wiring", "wire"]

Spawn = Callable[[Coroutine[Any, Any, Any]], Any]


class InventoryRefresher:
    """Keeps the inventory file of ``settings`` current after the commits of the sessions it watches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._on_commit = self._after_commit  # one bound method: event.remove needs the same object

    def watch(self, session_factory: sessionmaker[Session]) -> None:
        """Refresh the file after every commit of ``session_factory``'s sessions that changed a node."""
        event.listen(session_factory, "after_flush", _note_node_changes)
        event.listen(session_factory, "after_rollback", _forget_node_changes)
        event.listen(session_factory, "after_commit", self._on_commit)

    def unwatch(self, session_factory: sessionmaker[Session]) -> None:
        """Stop watching ``session_factory`` (the wiring's close; a second call does nothing)."""
        for name, hook in (
            ("after_flush", _note_node_changes),
            ("after_rollback", _forget_node_changes),
            ("after_commit", self._on_commit),
        ):
            if event.contains(session_factory, name, hook):
                event.remove(session_factory, name, hook)

    def _after_commit(self, session: Session) -> None:
        if not session.info.pop("mko_nodes_changed", False):
            return
        from mko.nic.ansible import request_refresh  # the writer: loaded when a node really changed

        bind = session.get_bind()
        request_refresh(bind if isinstance(bind, Engine) else bind.engine, self.settings)


def _note_node_changes(session: Session, _context: Any) -> None:
    if any(isinstance(obj, Node) for obj in (*session.new, *session.dirty, *session.deleted)):
        session.info["mko_nodes_changed"] = True


def _forget_node_changes(session: Session) -> None:
    session.info.pop("mko_nodes_changed", None)


@dataclass
class Wiring:
    """The connected parts of one process (see the module docstring)."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    inventory_refresher: InventoryRefresher
    owns_engine: bool = True

    def ups_monitor(self, *, ha: bool = False) -> tuple[UpsMonitor, RuleEngine]:
        """A UPS monitor whose events the rule engine acts on; the engine also adopts failed-over rules."""
        from mko.rules.engine import RuleEngine
        from mko.ups.monitor import UpsMonitor

        monitor: UpsMonitor | None = None

        def latest_reading(ups_id: int) -> Any:
            # The monitor's own reading (None before the monitor exists or has read this UPS).
            return monitor.latest_reading(ups_id) if monitor is not None else None

        rules = RuleEngine(self.session_factory, self.settings, readings=latest_reading)
        monitor = UpsMonitor(self.session_factory, self.settings, sink=rules, ha=ha)
        return monitor, rules

    def scheduler(self, spawn: Spawn | None = None) -> Scheduler:
        """The scheduler; ``spawn`` runs what a schedule starts (the server's background tasks)."""
        from mko.schedules.scheduler import Scheduler

        return Scheduler(self.session_factory, self.settings, spawn=spawn)

    def refresher(self) -> Refresher:
        """The reachability refresher of the nodes (probes every ``reachability_interval`` seconds)."""
        from mko.wol.reachability import Refresher

        settings = self.settings
        return Refresher(
            self.session_factory, interval=settings.reachability_interval, timeout=settings.probe_timeout
        )

    def close(self) -> None:
        """Detach the session hooks and, if ``wire`` built it, dispose of the engine."""
        self.inventory_refresher.unwatch(self.session_factory)
        if self.owns_engine:
            self.engine.dispose()


def wire(settings: Settings, *, engine: Engine | None = None) -> Wiring:
    """Connect the domains for a process on ``settings``' database (or on ``engine``, kept by the caller)."""
    ownership.configure(settings)
    owns_engine = engine is None
    if engine is None:
        engine = make_engine(settings.database_url, worker_threads=settings.worker_threads)
    session_factory = make_session_factory(engine)
    inventory = InventoryRefresher(settings)
    inventory.watch(session_factory)
    return Wiring(settings, engine, session_factory, inventory, owns_engine)
