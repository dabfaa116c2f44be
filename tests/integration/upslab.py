"""Helpers of the UPS integration tests: the monitor running in a lab's orch namespace, and waiting.

The monitor, its NUT connection and its magic packets all live in the lab's ``orch`` namespace, where a
real upsd listens on the namespace's own 127.0.0.1 (:class:`mko.lab.nut.NutServer` with ``netns``).
The test drives the UPS by rewriting the driver's .dev file and reads results from the database.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.lab.netns import enter_netns
from mko.platform.db.models.operations import Operation
from mko.platform.db.models.ups import UpsEvent
from mko.platform.settings import Settings
from mko.ups.monitor import UpsMonitor
from mko.wiring import wire

T = TypeVar("T")


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
