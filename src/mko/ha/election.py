"""High availability: which `mko serve` instance is the leader, and which instances are alive.

Several `mko serve` processes may share one PostgreSQL database. Each registers a row in ``instances``
and heartbeats it. Leadership is a PostgreSQL **session-level advisory lock** (:data:`LEADER_KEY`) taken
with ``pg_try_advisory_lock`` on a connection of its own, outside the pool: PostgreSQL releases it the
moment that session ends, whether the process exited, was killed, or its network went away (TCP
keepalives and ``tcp_user_timeout`` on both ends bound how long a silent peer keeps its session). On the
same connection each instance also holds a second advisory lock naming its own id, so "is instance N
alive?" is answered by PostgreSQL itself (:func:`live_instance_ids`).

:class:`LeaderElection` runs the loop. A follower tries the lock every ``ha_check_interval``; the leader
runs ``SELECT 1`` on its connection at the same pace with a short timeout, and when that fails it stops
its leader duties at once (**fencing**) before PostgreSQL can have given the lock to anyone else: the
check fails within ``ha_check_interval + ha_check_timeout`` while the server drops the session only
after ``ha_failover_timeout``. With SQLite there is no election: the one instance is the leader (the
UPS monitor's lock file still keeps a second monitor off the same database file).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from mko import __version__
from mko.operations.identity import current_instance, instance_name, set_current_instance
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.ha import Instance
from mko.platform.db.session import is_postgresql
from mko.platform.settings import Settings

__all__ = ["LEADER_KEY", "LIVENESS_CLASS", "LeaderElection", "cluster_status", "live_instance_ids"]

log = logging.getLogger("mko.ha")

# pg_try_advisory_lock(bigint): "mko" + "LEAD" in ASCII, so it is recognisable in pg_locks.
LEADER_KEY = 0x6D6B6F_4C454144
# pg_try_advisory_lock(int, int): (this class, instance id) is held by every live instance.
LIVENESS_CLASS = 0x6D6B6F

Hook = Callable[[], Awaitable[None]]


def _connect_kwargs(settings: Settings, name: str) -> dict[str, Any]:
    """libpq parameters of the dedicated connection: the URL's, plus timeouts and keepalives."""
    url = make_url(settings.database_url)
    kwargs: dict[str, Any] = {}
    for key, value in (
        ("host", url.host),
        ("port", url.port),
        ("user", url.username),
        ("password", url.password),
        ("dbname", url.database),
    ):
        if value is not None:
            kwargs[key] = value
    for key, option in url.query.items():
        kwargs[key] = option if isinstance(option, str) else option[-1]
    bound = settings.ha_failover_timeout
    idle = max(1, math.floor(bound / 2))
    count = max(1, math.floor(bound - idle))
    check_ms = max(100, int(settings.ha_check_timeout * 1000))
    # Client side: notice a dead server quickly (the check has its own timeout too).
    kwargs |= {
        "connect_timeout": max(2, math.ceil(settings.ha_check_timeout)),
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": 1,
        "keepalives_count": count,
        "tcp_user_timeout": int(bound * 1000),
        "application_name": f"mko-ha {name}"[:63],
        # Server side: drop this session, and so free its locks, once the client is silent for ~bound.
        "options": (
            f"-c statement_timeout={check_ms} -c tcp_keepalives_idle={idle}"
            f" -c tcp_keepalives_interval=1 -c tcp_keepalives_count={count}"
            f" -c tcp_user_timeout={int(bound * 1000)}"
        ),
    }
    return kwargs


def live_instance_ids(session: Session) -> set[int] | None:
    """Ids of the instances whose PostgreSQL session is alive (None when the database is not PostgreSQL)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    rows = session.execute(
        text(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = :cls AND objsubid = 2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"cls": LIVENESS_CLASS},
    )
    return {int(row[0]) for row in rows}


def _leader_application(session: Session) -> str | None:
    """application_name of the session holding the leader lock (PostgreSQL's own answer)."""
    row = session.execute(
        text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.classid = :hi AND l.objid = :lo"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"hi": LEADER_KEY >> 32, "lo": LEADER_KEY & 0xFFFFFFFF},
    ).first()
    return str(row[0]) if row is not None else None


def cluster_status(session: Session, settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """Database kind, every registered instance (online or offline) and the leader."""
    now = now or utcnow()
    kind = session.get_bind().dialect.name
    live = live_instance_ids(session)
    holder = _leader_application(session) if kind == "postgresql" else None
    stale = timedelta(seconds=settings.ha_dead_after)
    instances = []
    leader: str | None = None
    for row in session.scalars(select(Instance).order_by(Instance.id)):
        age = (now - row.heartbeat_at).total_seconds()
        if row.stopped_at is not None:
            online = False
        elif live is not None:
            online = row.id in live
        else:
            online = age <= stale.total_seconds()
        if kind == "postgresql":
            is_leader = online and holder == f"mko-ha {row.name}"[:63]
        else:
            is_leader = online and row.is_leader
        if is_leader:
            leader = row.name
        instances.append(
            {
                "id": row.id,
                "name": row.name,
                "hostname": row.hostname,
                "pid": row.pid,
                "url": row.url,
                "version": row.version,
                "online": online,
                "leader": is_leader,
                "leader_since": row.leader_since if is_leader else None,
                "started_at": row.started_at,
                "heartbeat_at": row.heartbeat_at,
                "heartbeat_age": round(max(0.0, age), 1),
                "stopped_at": row.stopped_at,
            }
        )
    return {
        "database": kind,
        "high_availability": kind == "postgresql",
        "leader": leader,
        "instances": instances,
        "online": sum(1 for i in instances if i["online"]),
        "failover_timeout": settings.ha_failover_timeout if kind == "postgresql" else None,
    }


class LeaderElection:
    """One instance's registration, heartbeat and (on PostgreSQL) leader election; start() / stop().

    ``on_elected`` runs when this instance becomes the leader, ``on_lost`` when it stops being one
    (fencing, or stop()); both are awaited in the election loop, so no check runs while they do.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        on_elected: Hook | None = None,
        on_lost: Hook | None = None,
        url: str | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.url = url if url is not None else settings.instance_url
        self.name = name or instance_name(settings)
        self.postgresql = is_postgresql(settings.database_url)
        self.instance_id: int | None = None
        self.leader_since: datetime | None = None
        self.elected = asyncio.Event()
        self._leader = False
        self._connection: Any = None  # psycopg.AsyncConnection, imported lazily
        self._tasks: list[asyncio.Task[None]] = []
        self._transitions = 0
        self._stopping = False
        self._in_flight: set[asyncio.Future[None]] = set()

    # -------------------------------------------------------------- state

    @property
    def is_leader(self) -> bool:
        """Whether this instance holds the leadership now."""
        return self._leader

    @property
    def transitions(self) -> int:
        """How many times leadership was won or lost here (tests, benchmarks)."""
        return self._transitions

    # -------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Register this instance, then lead at once (SQLite) or start the election loop (PostgreSQL)."""
        await self._in_thread(self._register)
        set_current_instance(self.name)
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="mko-ha-heartbeat"))
        if self.postgresql:
            self._tasks.append(asyncio.create_task(self._election_loop(), name="mko-ha-election"))
        else:
            await self._become_leader()

    async def stop(self) -> None:
        """Give up leadership (stopping its duties first), end the loops, mark the instance stopped."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._leader:
            await self._step_down("this instance is stopping")
        await self._close_connection()
        with contextlib.suppress(Exception):
            await self._in_thread(self._mark_stopped)
        if self._in_flight:  # work whose wait a timeout or this stop abandoned: let it close its session
            await asyncio.wait(set(self._in_flight), timeout=self.settings.ha_dead_after)
        if current_instance() == self.name:
            set_current_instance(None)

    # -------------------------------------------------------------- database rows

    async def _in_thread(self, work: Callable[[], None]) -> None:
        """Run database work in a worker thread, off the event loop.

        A timeout or a stop abandons the *wait*, never the work: a thread cannot be interrupted, so it
        finishes and closes its session, and :meth:`stop` waits for it. Otherwise a connection checked out
        by an abandoned write would outlive the instance (and its engine's pool).
        """
        future = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, work)
        self._in_flight.add(future)
        future.add_done_callback(self._forget)
        await asyncio.shield(future)

    def _forget(self, future: asyncio.Future[None]) -> None:
        self._in_flight.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved: a failure nobody waited for any more is not logged twice

    def _register(self) -> None:
        now = utcnow()
        with self.session_factory() as session:
            row = session.scalars(select(Instance).where(Instance.name == self.name)).first()
            if row is None:
                row = Instance(name=self.name, hostname=socket.gethostname(), pid=os.getpid())
                session.add(row)
            row.hostname, row.pid, row.url, row.version = (
                socket.gethostname(),
                os.getpid(),
                self.url,
                __version__,
            )
            row.started_at = row.heartbeat_at = now
            row.stopped_at, row.is_leader, row.leader_since = None, False, None
            session.commit()
            self.instance_id = row.id
        log.info("instance %s registered (id %s)", self.name, self.instance_id)

    def _beat(self) -> None:
        with self.session_factory() as session:
            session.execute(
                update(Instance)
                .where(Instance.id == self.instance_id)
                .values(
                    heartbeat_at=utcnow(),
                    is_leader=self._leader,
                    leader_since=self.leader_since if self._leader else None,
                    stopped_at=None,
                )
            )
            session.commit()

    def _mark_stopped(self) -> None:
        with self.session_factory() as session:
            session.execute(
                update(Instance)
                .where(Instance.id == self.instance_id)
                .values(stopped_at=utcnow(), is_leader=False, leader_since=None)
            )
            session.commit()

    async def _heartbeat_loop(self) -> None:
        # NOTE: Python 3.11's asyncio.wait_for can swallow a cancellation that arrives as its inner
        # future completes; the loops therefore also end on the stop flag, and use asyncio.timeout.
        while not self._stopping:
            try:
                # A hung database must not stall the server's loop: the write runs in a thread.
                async with asyncio.timeout(self.settings.ha_dead_after):
                    await self._in_thread(self._beat)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("instance %s: heartbeat failed: %s", self.name, exc)
            await asyncio.sleep(self.settings.ha_heartbeat_interval)

    # -------------------------------------------------------------- election (PostgreSQL)

    async def _election_loop(self) -> None:
        interval = self.settings.ha_check_interval
        while not self._stopping:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("instance %s: election check crashed", self.name)
            await asyncio.sleep(interval)

    async def _tick(self) -> None:
        if self._connection is None or self._connection.closed:
            if self._leader:
                await self._step_down("its database connection is gone")
            if not await self._connect():
                return
        if self._leader:
            if not await self._query("SELECT 1"):
                await self._step_down("its database connection failed the check")
                await self._close_connection()
            return
        won = await self._query("SELECT pg_try_advisory_lock(%s)", (LEADER_KEY,))
        if won is None:
            await self._close_connection()
        elif won:
            await self._become_leader()

    async def _connect(self) -> bool:
        import psycopg

        timeout = max(2.0, self.settings.ha_check_timeout * 2)
        try:
            async with asyncio.timeout(timeout):
                connection = await psycopg.AsyncConnection.connect(
                    **_connect_kwargs(self.settings, self.name), autocommit=True
                )
        except (TimeoutError, psycopg.Error, OSError) as exc:
            log.warning("instance %s: cannot open its election connection: %s", self.name, exc)
            return False
        self._connection = connection
        # Our own liveness lock: PostgreSQL itself then says whether this instance is alive.
        if not await self._query("SELECT pg_try_advisory_lock(%s, %s)", (LIVENESS_CLASS, self.instance_id)):
            log.warning("instance %s: could not take its liveness lock", self.name)
        return True

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """First column of the first row, or None when the connection failed (which is then closed)."""
        connection = self._connection
        if connection is None:
            return None
        try:
            async with asyncio.timeout(self.settings.ha_check_timeout):
                cursor = await connection.execute(sql, params)
                row = await cursor.fetchone()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # timeout, server gone, session terminated
            log.warning("instance %s: election connection failed: %s", self.name, exc or type(exc).__name__)
            await self._close_connection()
            return None
        return row[0] if row is not None else None

    async def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                # A dead peer may never answer the terminate message: do not wait for it.
                async with asyncio.timeout(1.0):
                    await connection.close()

    # -------------------------------------------------------------- transitions

    async def _become_leader(self) -> None:
        self._leader = True
        self._transitions += 1
        self.leader_since = utcnow()
        # A takeover is worth a warning; the one instance of a SQLite install always leads.
        level = logging.WARNING if self.postgresql else logging.INFO
        log.log(level, "instance %s is now the leader", self.name)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.settings.ha_check_timeout * 2):
                await self._in_thread(self._beat)
        self.elected.set()
        if self.on_elected is not None:
            try:
                await self.on_elected()
            except Exception:
                log.exception("instance %s: starting the leader duties failed", self.name)

    async def _step_down(self, why: str) -> None:
        if not self._leader:
            return
        # Fencing: the duties stop before anything else, so two leaders never act at once.
        self._leader = False
        self._transitions += 1
        self.leader_since = None
        self.elected.clear()
        log.log(
            logging.INFO if self._stopping else logging.WARNING,
            "instance %s is no longer the leader: %s",
            self.name,
            why,
        )
        if self.on_lost is not None:
            try:
                await self.on_lost()
            except Exception:
                log.exception("instance %s: stopping the leader duties failed", self.name)
        if not self._stopping:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.ha_check_timeout * 2):
                    await self._in_thread(self._beat)
