"""Typed FastAPI dependencies.

Database work never runs on the event loop. Sync routes (``def``) get :data:`SessionDep`: FastAPI runs
them in a worker thread, and the session is closed in that thread as the route returns
(:class:`mko.http.routing.MkoRoute`). Async routes (``async def``,
for work that awaits the network) get :data:`DbDep` instead and run each piece of database work in a
worker thread with a session of its own, so no session or connection is held while they await.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mko.operations.records import Actor
from mko.platform.db.session import in_thread_session, waits_for_a_lock
from mko.platform.settings import Settings

__all__ = ["ActorDep", "Db", "DbDep", "ReadSessionDep", "SessionDep", "SettingsDep"]

T = TypeVar("T")


# The two session dependencies are async generators, yet no database work happens on the event loop:
# a new Session has no connection (it takes one at its first query, in the route's worker thread), and
# MkoRoute closes it in that thread as the route returns. As sync generators each cost two
# worker-thread hops (enter, exit) besides the route's own.


@asynccontextmanager
async def _request_session(factory: sessionmaker[Session]) -> AsyncIterator[Session]:
    session = factory()
    try:
        yield session
    finally:
        if session.in_transaction():  # its route did not close it (a bug): say so, and close it off the loop
            warnings.warn("a request session was left open by its route", ResourceWarning, stacklevel=1)
            await anyio.to_thread.run_sync(session.close)
        else:
            session.close()  # holds no connection: nothing to release


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request, always closed."""
    async with _request_session(request.app.state.session_factory) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """One read-only session per request (a write through it raises), always closed."""
    async with _request_session(request.app.state.read_session_factory) as session:
        yield session


class Db:
    """Database work for async routes: each :meth:`run` is a worker thread with a session of its own."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        read_factory: sessionmaker[Session],
        loop_read_factory: sessionmaker[Session] | None = None,
    ) -> None:
        self.factory = factory
        self.read_factory = read_factory
        self.loop_read_factory = loop_read_factory

    async def run(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in a worker thread; the session is closed before this returns."""
        return await in_thread_session(self.factory, work)

    async def read(self, work: Callable[[Session], T]) -> T:
        """:meth:`run` with a read-only session: nothing is committed, and a write raises."""
        return await in_thread_session(self.read_factory, work)

    async def lookup(self, work: Callable[[Session], T]) -> T:
        """:meth:`read` for a lookup of a few rows by key (a node's status), never a list.

        On a SQLite file it runs on the event loop itself, on a session of
        :func:`mko.platform.db.session.make_loop_read_engine` (bounded: no pool, no lock wait, no
        write), saving the worker-thread hop that cost more than the query; when another connection
        holds a lock the lookup would wait for, it is made in a worker thread instead.
        """
        if self.loop_read_factory is not None:
            try:
                with self.loop_read_factory() as session:
                    return work(session)
            except OperationalError as exc:
                if not waits_for_a_lock(exc):
                    raise
        return await self.read(work)


# The dependencies below do no blocking work, so they are async: FastAPI calls them on the event loop
# instead of spending a worker thread on each.


async def get_db(request: Request) -> Db:
    """The app's sessions, for async routes."""
    state = request.app.state
    return Db(state.session_factory, state.read_session_factory, state.loop_read_factory)


async def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_actor(request: Request) -> Actor:
    """Who is calling (the authenticated user or token, set by the auth dependency) and from where."""
    client = request.client.host if request.client else ""
    principal = getattr(request.state, "principal", None)
    return Actor(name=principal.actor_name if principal is not None else "api", source=client)


# scope="function": the session is closed (its connection back in the pool) as soon as the route
# returns, not after the response has been sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
#: For sync routes that only read (lists, one row, a status): see ``make_read_session_factory``.
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
DbDep = Annotated[Db, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ActorDep = Annotated[Actor, Depends(get_actor)]
