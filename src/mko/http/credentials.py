"""Bearer tokens looked up once, and re-checked against the database before every use, in shared checks.

Looking a token up (hash, find its row, build the principal) costs a worker thread and a query per
request; a burst of 64 clients with one token did it 64 times at once. :class:`TokenCache` keeps a
token that was found (by its hash, never the token itself) for :data:`IDLE` seconds after its last use,
and a request with such a token waits for a **check**: one query in a worker thread that reads every
cached token's row (revoked? expired? deleted with its user?).

A revocation is honoured at once, by any process that writes it (the API, ``mko token revoke``, another
instance on the same PostgreSQL): a request waits for a check that *started after it arrived*, so it
sees every change committed before it. Requests that arrive while a check runs share the next one, so
a burst costs one query per round, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from mko.access.principal import Principal
from mko.access.tokens import authenticate_token, check_tokens, token_hash
from mko.platform.db.session import in_thread_session

__all__ = ["IDLE", "TokenCache"]

#: Seconds a token stays cached after its last use; then the next use looks it up again.
IDLE = 60.0
#: Tokens cached at most (the least recently used go first); only tokens that were valid get in.
SIZE = 1024


@dataclass
class _Entry:
    token_id: int
    used: float  # time.monotonic() of the last use


class TokenCache:
    """Valid tokens of one database, each use confirmed by a check that started after the request came."""

    def __init__(self, factory: sessionmaker[Session], *, idle: float = IDLE, size: int = SIZE) -> None:
        self.factory = factory
        self.idle = idle
        self.size = size
        self._entries: dict[str, _Entry] = {}
        self._next: asyncio.Future[dict[int, Principal]] | None = None  # the check not yet started
        self._running: asyncio.Task[None] | None = None
        self.checks = 0  # checks run so far (for tests and metrics)

    async def authenticate(self, plain: str) -> Principal | None:
        """The principal of a valid token now, or None (unknown, revoked, expired or deleted)."""
        key = token_hash(plain)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and now - entry.used <= self.idle:
            principal = (await self._fresh()).get(entry.token_id)
            if principal is None:
                self._entries.pop(key, None)
                return None
            entry.used = now
            return principal
        principal = await in_thread_session(self.factory, lambda session: authenticate_token(session, plain))
        if principal is not None and principal.token_id is not None:
            self._entries.pop(key, None)  # re-inserted last: the dict's order is the order of use
            self._entries[key] = _Entry(principal.token_id, now)
            self._trim(now)
        return principal

    def _trim(self, now: float) -> None:
        for key in [key for key, entry in self._entries.items() if now - entry.used > self.idle]:
            del self._entries[key]
        while len(self._entries) > self.size:
            del self._entries[next(iter(self._entries))]

    async def _fresh(self) -> dict[int, Principal]:
        """The valid cached tokens, from a check that starts after this call."""
        waiting = self._next
        if waiting is None:
            waiting = self._next = asyncio.get_running_loop().create_future()
            if self._running is None:
                self._start()
        # Shielded: a request that goes away does not cancel the check the others wait for.
        return await asyncio.shield(waiting)

    def _start(self) -> None:
        waiting, self._next = self._next, None
        assert waiting is not None
        ids = [entry.token_id for entry in self._entries.values()]
        self._running = asyncio.get_running_loop().create_task(self._check(ids, waiting))

    async def _check(self, ids: list[int], waiting: asyncio.Future[dict[int, Principal]]) -> None:
        try:
            valid = await in_thread_session(self.factory, lambda session: check_tokens(session, ids))
        except asyncio.CancelledError:  # the server stops
            waiting.cancel()
            raise
        except Exception as exc:  # the waiting requests get the database's error
            waiting.set_exception(exc)
        else:
            waiting.set_result(valid)
        finally:
            self.checks += 1
            self._running = None
            if self._next is not None:  # requests came while this one ran
                self._start()
