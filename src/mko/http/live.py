"""Live reads of remote state (node power and reachability, SSH host keys, UPSes): shared, rate-limited.

Viewers never make mko connect out: their GETs show the last known state with its age. A fresh reading
is asked for explicitly (``?refresh=true``, ``?probe=true``) and needs the operator role; even then at
most one read per target is in flight (callers meanwhile await the same one), and a reading younger than
``live_read_interval`` is answered instead of a new read, failures included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from mko.platform.db.models.base import utcnow

__all__ = ["LiveReads", "Reading"]

T = TypeVar("T")


@dataclass(frozen=True)
class Reading(Generic[T]):
    """One read of a target: its value (or the error it raised) and when it ended."""

    value: T | None
    error: BaseException | None
    at: datetime
    monotonic: float

    @property
    def age(self) -> float:
        """Seconds since the read ended."""
        return time.monotonic() - self.monotonic

    def result(self) -> T:
        """The value, or the read's error raised again."""
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value

    def stamp(self) -> dict[str, Any]:
        """``checked_at`` and ``age_seconds``, as the API shows them beside a reading."""
        return {"checked_at": self.at, "age_seconds": round(self.age, 1)}


class LiveReads(Generic[T]):
    """Reads of many targets of one kind; ``min_interval`` seconds at least between two reads of one."""

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self._last: dict[Hashable, Reading[T]] = {}
        self._running: dict[Hashable, asyncio.Future[Reading[T]]] = {}

    def last(self, key: Hashable) -> Reading[T] | None:
        """The latest reading of ``key`` (None: never read)."""
        return self._last.get(key)

    def put(self, key: Hashable, value: T) -> None:
        """Keep a reading learnt otherwise (a power action that verified the state it reached)."""
        self._last[key] = Reading(value, None, utcnow(), time.monotonic())

    def forget(self, key: Hashable) -> None:
        """Drop the latest reading of ``key`` (what it showed is known to have changed)."""
        self._last.pop(key, None)

    async def read(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> Reading[T]:
        """A reading of ``key``: the recent one, the one in flight, or a new ``fetch()``."""
        recent = self._last.get(key)
        if recent is not None and recent.age < self.min_interval:
            return recent
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._fetch(key, fetch))
            self._running[key] = running
        # Shielded: a caller that hangs up does not cancel the read the others wait for.
        return await asyncio.shield(running)

    async def _fetch(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> Reading[T]:
        try:
            value, error = await fetch(), None
        except Exception as exc:  # kept and raised to every caller, and rate-limited like a success
            value, error = None, exc
        finally:
            self._running.pop(key, None)
        reading: Reading[T] = Reading(value, error, utcnow(), time.monotonic())
        self._last[key] = reading
        return reading
