"""``/api/health``: liveness and database reachability that stay fast while a burst of requests runs.

The check never queues behind the requests: it has its own thread and its own connection (neither the
worker threads nor the pool they share), at most one query is in flight (concurrent probes share it),
a result younger than :data:`FRESH` is reused, and a probe waits at most :data:`WAIT` for the query;
past that it gets the last known result and its age.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import Engine, text

from mko import __version__
from mko.http.routing import MkoRoute
from mko.platform.db.session import make_engine

__all__ = ["DatabaseHealth", "HealthReading", "router"]

FRESH = 1.0  # seconds a result is reused
WAIT = 0.5  # seconds a probe waits for a query in flight
STALLED = 5.0  # seconds without an answer after which the database counts as unreachable


@dataclass(frozen=True)
class HealthReading:
    """One check of the database: whether it answered, when, and how long it took."""

    ok: bool
    at: float  # time.monotonic() when the check ended
    latency: float
    error: str | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        """The reading as ``/api/health`` shows it."""
        return {
            "ok": self.ok,
            "age_seconds": round(now - self.at, 3),
            "latency_ms": round(self.latency * 1000, 1),
            "error": self.error,
        }


class DatabaseHealth:
    """Checks of one database, one at a time, off the worker threads and the shared pool."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running: asyncio.Future[HealthReading] | None = None
        self._running_since = 0.0
        self.last: HealthReading | None = None

    def _query(self) -> HealthReading:
        started = time.monotonic()
        try:
            if self._engine is None:
                self._engine = make_engine(self.database_url, worker_threads=1)
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "not reachable"; its kind is reported
            return HealthReading(False, time.monotonic(), time.monotonic() - started, type(exc).__name__)
        return HealthReading(True, time.monotonic(), time.monotonic() - started)

    async def reading(self) -> HealthReading | None:
        """A fresh reading, or the last one when the query takes longer than :data:`WAIT` (None: none yet).

        A query without an answer for :data:`STALLED` seconds is reported as a failed reading.
        """
        now = time.monotonic()
        if self.last is not None and now - self.last.at < FRESH:
            return self.last
        if self._running is None or self._running.done():
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mko-health")
            self._running = asyncio.get_running_loop().run_in_executor(self._executor, self._query)
            self._running.add_done_callback(self._keep)
            self._running_since = now
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), WAIT)
        except TimeoutError:
            waited = time.monotonic() - self._running_since
            if waited >= STALLED:
                return HealthReading(False, time.monotonic(), waited, f"no answer for {waited:.0f} s")
            return self.last

    def _keep(self, future: asyncio.Future[HealthReading]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.last = future.result()

    def close(self) -> None:
        """Stop the thread and close the connection."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class HealthStatus(BaseModel):
    """``ok`` while the database answers; ``database`` is its latest check (None before the first)."""

    status: str
    version: str
    database: dict[str, Any] | None


router = APIRouter(tags=["health"], route_class=MkoRoute)


@router.get(
    "/api/health", responses={503: {"model": HealthStatus, "description": "the database does not answer"}}
)
async def health(request: Request, response: Response) -> HealthStatus:
    """Liveness and database reachability, for probes; fast while the server is busy."""
    database: DatabaseHealth = request.app.state.database_health
    reading = await database.reading()
    now = time.monotonic()
    if reading is not None and not reading.ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthStatus(status="degraded", version=__version__, database=reading.as_dict(now))
    return HealthStatus(status="ok", version=__version__, database=reading.as_dict(now) if reading else None)
