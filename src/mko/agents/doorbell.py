"""In-process signals that a wake job was queued or reported, and PostgreSQL
LISTEN/NOTIFY carrying them between processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

__all__ = []

log = logging.getLogger("mko.agents")


NOTIFY_CHANNEL = "mko_wake_jobs"


class Doorbell:
    """Wakes coroutines (on any event loop) waiting for something another thread or task did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def ring(self) -> None:
        """Wake every current waiter; callable from any thread."""
        with self._lock:
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, timeout: float) -> None:
        """Return after a ring or ``timeout`` seconds, whichever is first."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            self._waiters.add(entry)
        try:
            async with asyncio.timeout(max(timeout, 0)):  # not wait_for: it can swallow a cancellation
                await future
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(entry)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


#: Rung when a job is queued (claims answer at once) and when one is reported (wakes finish at once).
jobs_queued = Doorbell()
jobs_reported = Doorbell()


_listeners: dict[int, threading.Event] = {}  # id(engine) -> the stop of its listener, while it listens
_listeners_lock = threading.Lock()
#: Seconds between looks at the listener's stop while no notification comes.
_LISTEN_SLICE = 1.0


def _listen_for_jobs(session_factory: sessionmaker[Session]) -> None:
    """On PostgreSQL, LISTEN for jobs queued by other processes (a CLI wake, another server) so waiting
    claims answer at once rather than at their next poll: one thread per engine, until it is disposed of
    (its connection, detached from the pool, is then closed: nothing disposes of it otherwise)."""
    engine = session_factory.kw.get("bind")
    if engine is None or engine.dialect.name != "postgresql":
        return
    with _listeners_lock:
        if id(engine) in _listeners:
            return
        stop = _listeners[id(engine)] = threading.Event()
    event.listen(engine, "engine_disposed", lambda _engine: stop.set())
    thread = threading.Thread(target=_listen, args=(engine, stop), name="mko-agent-jobs-listen", daemon=True)
    thread.start()


def _listen(engine: Any, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            driver = None
            try:
                # A connection of its own: detached from the pool, in autocommit for LISTEN.
                raw = engine.raw_connection()
                driver = raw.driver_connection
                raw.detach()
                driver.rollback()  # the pool's pre-ping may have opened a transaction
                driver.autocommit = True
                driver.execute(f"LISTEN {NOTIFY_CHANNEL}")
                while not stop.is_set():
                    for _notify in driver.notifies(timeout=_LISTEN_SLICE):
                        jobs_queued.ring()
            except Exception as exc:  # the database restarted or went away: listen again shortly
                log.info("listening for queued wake jobs stopped (%s); polling until it is back", exc)
            finally:
                if driver is not None:
                    with contextlib.suppress(Exception):
                        driver.close()  # a dropped connection left open would only be closed by the GC
            stop.wait(5.0)
    finally:
        with _listeners_lock:
            if _listeners.get(id(engine)) is stop:
                del _listeners[id(engine)]
