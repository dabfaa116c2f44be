"""Lookups by key on the event loop itself (``Db.lookup``): only where they cannot stall it.

A worker-thread hop cost more than a node's status query. On a SQLite file the lookup runs on the loop,
on a connection of its own that never waits for a lock and cannot write; PostgreSQL (a round trip away)
and a lock another connection holds send it to a worker thread as before.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mko.app import create_app
from mko.http.deps import Db
from mko.platform.db.models.inventory import Node
from mko.platform.db.session import (
    make_engine,
    make_loop_read_engine,
    make_read_session_factory,
    make_session_factory,
    waits_for_a_lock,
)
from mko.platform.errors import ReadOnlySessionError
from mko.platform.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _thread_of(session: Session) -> int:
    session.execute(text("SELECT 1"))
    return threading.get_ident()


def _db(engine: Engine, loop_engine: Engine | None) -> Db:
    loop = None if loop_engine is None else make_read_session_factory(loop_engine)
    return Db(make_session_factory(engine), make_read_session_factory(engine), loop)


@pytest.fixture
def sqlite_url(settings: Settings, session: Session) -> str:
    """The test's migrated SQLite file, in WAL mode (as the server's first connection leaves it)."""
    session.execute(text("SELECT 1"))
    session.rollback()
    return settings.database_url


async def test_a_lookup_runs_on_the_loop_with_sqlite_and_in_a_worker_thread_with_postgresql(
    sqlite_url: str, pg_url: str
) -> None:
    loop_thread = threading.get_ident()
    for url, on_loop in ((sqlite_url, True), (pg_url, False)):
        engine, loop_engine = make_engine(url), make_loop_read_engine(url)
        assert (loop_engine is not None) is on_loop
        try:
            ran_in = await _db(engine, loop_engine).lookup(_thread_of)
        finally:
            engine.dispose()
            if loop_engine is not None:
                loop_engine.dispose()
        assert (ran_in == loop_thread) is on_loop, url


def test_no_loop_lookups_on_an_in_memory_database_or_a_file_not_created_yet(tmp_path: Path) -> None:
    # Another connection would open another, empty, database.
    assert make_loop_read_engine("sqlite://") is None
    assert make_loop_read_engine("sqlite:///:memory:") is None
    # The server's engine creates the file, private; a lookup connection must never be the one that does.
    assert make_loop_read_engine(f"sqlite:///{tmp_path / 'not-yet.db'}") is None
    assert not (tmp_path / "not-yet.db").exists()


def test_the_loop_connection_cannot_write_and_never_waits(sqlite_url: str, session: Session) -> None:
    loop_engine = make_loop_read_engine(sqlite_url)
    assert loop_engine is not None
    try:
        with loop_engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("query_only", "busy_timeout", "journal_mode")
            }
            with pytest.raises(OperationalError, match="readonly"):
                connection.exec_driver_sql("DELETE FROM nodes")
        with make_read_session_factory(loop_engine)() as reader:
            reader.add(Node(hostname="x", ip_address="127.0.0.1"))
            with pytest.raises(ReadOnlySessionError):
                reader.flush()
    finally:
        loop_engine.dispose()
    assert pragmas == {"query_only": 1, "busy_timeout": 0, "journal_mode": "wal"}


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[str, sqlite3.Connection]]:
    """A SQLite file without WAL whose only row another connection keeps locked (BEGIN EXCLUSIVE):
    a reader must wait for it, as under WAL it would only during a recovery."""
    path = tmp_path / "locked.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
        setup.execute("INSERT INTO t VALUES (1)")
    setup.close()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    yield f"sqlite:///{path}", locker
    locker.close()


async def test_a_lookup_that_would_wait_for_a_lock_waits_in_a_worker_thread(
    locked: tuple[str, sqlite3.Connection],
) -> None:
    url, locker = locked
    waiting = create_engine(url, connect_args={"timeout": 15})  # as the server's own: it waits
    loop_engine = make_loop_read_engine(url)
    threads: list[int] = []

    def read(session: Session) -> int:
        threads.append(threading.get_ident())
        return int(session.execute(text("SELECT x FROM t")).scalar_one())

    try:
        lookup = asyncio.create_task(_db(waiting, loop_engine).lookup(read))
        await asyncio.sleep(0.3)
        assert not lookup.done()  # waiting for the lock in a worker thread: this loop runs meanwhile
        locker.rollback()
        assert await lookup == 1
    finally:
        waiting.dispose()
        assert loop_engine is not None
        loop_engine.dispose()
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread and threads[-1] != loop_thread  # tried on the loop, then a thread


def test_only_a_lock_counts_as_a_wait() -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    other = sqlite3.OperationalError("no such table: t")
    other.sqlite_errorcode = 1  # type: ignore[attr-defined]
    assert waits_for_a_lock(OperationalError("SELECT", {}, busy))
    assert not waits_for_a_lock(OperationalError("SELECT", {}, other))
    assert not waits_for_a_lock(ValueError("database is locked"))


async def test_a_status_on_the_loop_does_not_wait_for_a_writer(settings: Settings, admin_token: str) -> None:
    """Under WAL a reader never waits for a writer: the status answers while another process writes."""
    app: FastAPI = create_app(settings)
    headers = {"Authorization": f"Bearer {admin_token}"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mko", headers=headers) as client:
            node = await client.post("/api/nodes", json={"hostname": "n1", "ip_address": "127.0.0.1"})
            assert node.status_code == 201
            with sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None) as w:
                w.execute("BEGIN IMMEDIATE")
                w.execute("UPDATE nodes SET description = 'being written'")
                status = await asyncio.wait_for(client.get(f"/api/nodes/{node.json()['id']}/wol/status"), 5)
                w.execute("ROLLBACK")
            w.close()
    finally:
        app.state.engine.dispose()
        app.state.loop_read_engine.dispose()
    assert status.status_code == 200 and status.json()["hostname"] == "n1"
