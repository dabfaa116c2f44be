"""Engines and sessions; SQLite gets foreign keys, WAL, a busy timeout and full sync, PostgreSQL works by URL.

The pool is sized for a burst (docs/database.md): every worker thread of the server (``worker_threads``)
runs one request's database work at a time and holds at most one connection, so the pool keeps one
connection per worker thread and lets the server's own loops and background operations have
:data:`BACKGROUND_CONNECTIONS` more. A request therefore never waits for a connection while another
request's thread sits idle, and the short :data:`POOL_TIMEOUT` only fires when something holds
connections it should not.

A database that cannot be connected to is a peer that does not answer: the engine raises
:class:`~mko.platform.errors.DatabaseUnavailableError` (HTTP 503, CLI exit 69), never a traceback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, SingletonThreadPool

from mko.platform.errors import DatabaseUnavailableError, ReadOnlySessionError
from mko.platform.files import private_sqlite

__all__ = [
    "BACKGROUND_CONNECTIONS",
    "BUSY_TIMEOUT",
    "DEFAULT_WORKER_THREADS",
    "POOL_TIMEOUT",
    "database_kind",
    "in_thread_session",
    "is_postgresql",
    "make_engine",
    "make_loop_read_engine",
    "make_read_session_factory",
    "make_session_factory",
    "waits_for_a_lock",
]

T = TypeVar("T")

#: Worker threads of `mko serve` (AnyIO's default, ``MKO_WORKER_THREADS``), one connection each.
DEFAULT_WORKER_THREADS = 40
#: Connections beyond one per worker thread: the UPS monitor and rule engine, the scheduler, the
#: reachability refresher, the HA heartbeat, background wakes closing their operations.
BACKGROUND_CONNECTIONS = 16
#: Seconds to wait for a pooled connection before the request fails (it never should; see above).
POOL_TIMEOUT = 10.0
#: Seconds a SQLite writer waits for another writer's lock. Writes are short (one request's changes),
#: so a queue of every connection at once clears in well under a second on an SSD and in a few seconds
#: on an SD card; the margin is for slow disks, not for long transactions.
BUSY_TIMEOUT = 15.0


def _unavailable(context: ExceptionContext) -> None:
    """A failure to connect (not a failed statement, not the pool's pre-ping, which reconnects) becomes
    DatabaseUnavailableError, with the driver's first line: it names the host or file, never a password."""
    if context.connection is not None or context.is_pre_ping:
        return
    reason = str(context.original_exception).strip().splitlines()
    raise DatabaseUnavailableError(
        f"the database does not answer: {reason[0] if reason else type(context.original_exception).__name__}"
    ) from context.sqlalchemy_exception


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets readers go on while one writer writes; busy_timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    # FULL, not NORMAL: with NORMAL a power cut can take back the last acknowledged writes (the WAL is
    # synced only at checkpoints), and mko's host loses power too. A commit costs one fsync of the WAL.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def make_engine(url: str, *, worker_threads: int = DEFAULT_WORKER_THREADS, pooled: bool = True) -> Engine:
    """An engine for ``url`` with a pool for ``worker_threads`` threads; creates a SQLite file's directory.

    ``pooled=False``: every use opens a connection and closes it after, so the engine never holds one
    open between uses (for a part that connects rarely and must leave nothing behind, whenever it ends).
    """
    parsed = make_url(url)
    pool: dict[str, Any] = (
        {"pool_size": worker_threads, "max_overflow": BACKGROUND_CONNECTIONS, "pool_timeout": POOL_TIMEOUT}
        if pooled
        else {"poolclass": NullPool}
    )
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        if not memory and not str(parsed.database).startswith("file:"):
            private_sqlite(Path(str(parsed.database)))  # 0600 in a 0700 directory, WAL and SHM alike
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT},
            **({} if memory else pool),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, **pool)
    event.listen(engine, "handle_error", _unavailable)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for routes that only read: nothing is flushed or committed (either raises
    :class:`ReadOnlySessionError`), and closing one just ends its read transaction."""
    factory = sessionmaker(engine, expire_on_commit=False, autoflush=False)
    event.listen(factory, "before_flush", _refuse_write)
    event.listen(factory, "before_commit", _refuse_write)
    return factory


def make_loop_read_engine(url: str) -> Engine | None:
    """An engine for lookups made on the event loop itself (through :func:`make_read_session_factory`'s
    sessions), or None where one could stall it.

    Only a SQLite file qualifies, and its lookups stay bounded: each thread has a connection of its own
    (no wait for the shared pool), which never waits for a lock (busy timeout 0: the caller retries in
    a worker thread on :func:`waits_for_a_lock`) and cannot write (``query_only``). Under WAL a reader
    never waits for a writer, so a lookup by key costs reading a few pages of the file, about what
    handing it to a worker thread costs. PostgreSQL is a network round trip away: its reads stay in
    worker threads, as does an in-memory database (another connection would see another database) and
    a file not created yet (this connection must never be the one that creates it: the server's own
    makes it private first).
    """
    parsed = make_url(url)
    database = str(parsed.database or "")
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    if not Path(database).is_file():
        return None
    engine = create_engine(url, poolclass=SingletonThreadPool, connect_args={"timeout": 0})
    event.listen(engine, "connect", _loop_read_pragmas)
    event.listen(engine, "handle_error", _unavailable)
    return engine


def _loop_read_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.close()


#: SQLite's primary result codes for "another connection holds the lock" (busy) and "locked".
_LOCK_CODES = (5, 6)


def waits_for_a_lock(exc: BaseException) -> bool:
    """Whether a SQLite statement failed only because another connection holds a lock it needs (without
    WAL, a writer; with it, a recovery or an exclusive-mode connection): worth retrying where waiting is
    allowed."""
    original = exc.orig if isinstance(exc, OperationalError) else None
    code = getattr(original, "sqlite_errorcode", None) if isinstance(original, sqlite3.Error) else None
    return code is not None and code & 0xFF in _LOCK_CODES


def _refuse_write(session: Session, *_args: Any) -> None:
    raise ReadOnlySessionError("a read-only session was asked to write or commit")


async def in_thread_session(factory: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    """``work(session)`` in a worker thread with a session of its own, closed before this returns.

    For async code: the event loop never waits on the database, and no session or connection is held
    across the caller's awaits. Objects ``work`` returns are detached: what it loaded stays readable.
    """

    def call() -> T:
        with factory() as session:
            return work(session)

    return await anyio.to_thread.run_sync(call)


def is_postgresql(url: str) -> bool:
    """Whether the database URL names PostgreSQL (then several instances may share it)."""
    return make_url(url).get_backend_name() == "postgresql"


def database_kind(url: str) -> str:
    """``postgresql`` or ``sqlite`` (or whatever backend the URL names)."""
    return make_url(url).get_backend_name()
