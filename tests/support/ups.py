"""UPS fixtures and helpers: a lab with a real upsd, the monitor running in its orch namespace, waiting.

``ups_lab_factory`` (module scope) ``ups_lab_factory(nodes=3, **RunningLab.start kwargs)`` builds a lab and
starts a real upsd + dummy-ups inside its ``orch`` namespace (:class:`mko.lab.nut.NutServer` with
``netns``), listening on that namespace's own 127.0.0.1; both are torn down when the module ends, so a
module builds them once (~3 s) and gives each test a fresh database.

The monitor, its NUT connection and its magic packets all live in the lab's ``orch`` namespace
(:class:`MonitorThread`). The test drives the UPS by rewriting the driver's .dev file and reads
results from the database.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.lab.harness import RunningLab
from mko.lab.netns import enter_netns
from mko.lab.nut import NutServer
from mko.platform.db.models.operations import Operation
from mko.platform.db.models.ups import UpsEvent
from mko.platform.settings import Settings
from mko.ups.monitor import UpsMonitor
from mko.wiring import wire
from support.lab import new_prefix

__all__ = ["MonitorThread", "UpsLabFactory", "event_names", "wait_until"]

T = TypeVar("T")
UpsLabFactory = Callable[..., tuple[RunningLab, NutServer]]


@pytest.fixture(scope="module")
def ups_lab_factory(
    netns_privileges: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpsLabFactory]:
    """Build labs with a real upsd + dummy-ups in their orch namespace; all stop when the module ends."""
    with ExitStack() as stack:

        def make(nodes: int = 3, **kwargs: Any) -> tuple[RunningLab, NutServer]:
            running = RunningLab.start(new_prefix("u"), nodes, **kwargs)
            stack.callback(running.close)
            nut = NutServer.start(tmp_path_factory.mktemp("nut"), netns=running.lab.orch)
            stack.callback(nut.stop)
            return running, nut

        yield make


class MonitorThread:
    """``UpsMonitor`` in its own thread and event loop, inside network namespace ``netns``."""

    def __init__(self, settings: Settings, netns: str) -> None:
        self.settings = settings
        self.netns = netns
        self.wiring = wire(settings)  # the rule engine is the monitor's event sink, as in `mko serve`
        self.engine = self.wiring.engine
        self.factory: sessionmaker[Session] = self.wiring.session_factory
        self.monitor: UpsMonitor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ups-monitor-test", daemon=True)

    def _run(self) -> None:
        try:
            with enter_netns(self.netns):
                asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.monitor, _rules = self.wiring.ups_monitor()
        await self.monitor.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.monitor.stop()

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` in the monitor's loop thread and return its result."""
        assert self._loop is not None
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = function()
            except BaseException as exc:
                box["error"] = exc
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Stop the monitor (it cancels waiting executions) and join the thread."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.wiring.close()
        if self._error is not None:
            raise self._error

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading results

    def events(self) -> list[UpsEvent]:
        """Every stored event, oldest first."""
        with self.factory() as session:
            return list(session.scalars(select(UpsEvent).order_by(UpsEvent.id)))

    def operations(self, kind: str | None = None) -> list[Operation]:
        """Operations (with steps), oldest first."""
        with self.factory() as session:
            query = select(Operation).order_by(Operation.id)
            if kind is not None:
                query = query.where(Operation.kind == kind)
            found = list(session.scalars(query))
            for operation in found:
                _ = operation.steps
            return found


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def event_names(events: list[UpsEvent]) -> list[str]:
    """The kinds of events, in order."""
    return [e.event.value for e in events]
