"""Requests come at once: no route works the database on the event loop, and a held lock stalls nobody else.

(A lookup by key on a SQLite file runs on the loop, bounded: tests/unit/http/test_loop_lookups.py.)

The load test (tests/e2e/test_load.py) measures a real burst; these tests pin down the rules it relies
on, one route at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from mko.app import create_app
from mko.http.deps import get_read_session, get_session
from mko.http.routing import MkoRoute
from mko.platform.db.models.access import ApiToken, Role
from mko.platform.db.session import BACKGROUND_CONNECTIONS, make_engine
from mko.platform.errors import ReadOnlySessionError
from mko.platform.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def lab_app(settings: Settings) -> Iterator[FastAPI]:
    app = create_app(settings.model_copy(update={"api_sync_wait": 5.0}))
    yield app
    app.state.engine.dispose()


def _routes(app: FastAPI) -> list[APIRoute]:
    """Every API and page route, through the included routers."""
    originals = (context.original_route for context in iter_route_contexts(app.routes))
    return [route for route in originals if isinstance(route, APIRoute)]


def _calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def test_async_routes_get_no_request_session(lab_app: FastAPI) -> None:
    """An ``async def`` route runs on the event loop: it must not be handed the request's Session."""
    routes = _routes(lab_app)
    asynchronous = [r for r in routes if inspect.iscoroutinefunction(inspect.unwrap(r.endpoint))]
    assert len(asynchronous) >= 15  # the wakes, power, probes, SSH, discovery ... (the check is real)
    request_sessions = {get_session, get_read_session}
    offenders = [
        f"{sorted(r.methods)} {r.path}" for r in asynchronous if request_sessions & set(_calls(r.dependant))
    ]
    assert not offenders


def test_read_routes_get_a_session_that_cannot_write(lab_app: FastAPI, session: Session) -> None:
    """The list and status reads run on a read-only session: a flush or a commit through it raises."""
    readers = {
        f"{sorted(r.methods)} {r.path}" for r in _routes(lab_app) if get_read_session in _calls(r.dependant)
    }
    assert {"['GET'] /api/nodes", "['GET'] /api/nodes/{node_id:int}", "['GET'] /api/clusters"} <= readers
    assert all(name.startswith("['GET']") for name in readers)
    with lab_app.state.read_session_factory() as reader:
        assert reader.scalars(select(ApiToken)).all() == []  # it reads
        reader.add(ApiToken(name="x", token_hash="0" * 64, prefix="mko_", role=Role.VIEWER))
        with pytest.raises(ReadOnlySessionError):
            reader.flush()
        reader.rollback()
        with pytest.raises(ReadOnlySessionError):
            reader.commit()
    assert session.scalars(select(ApiToken)).all() == []


def test_every_route_closes_its_session_in_its_own_thread(lab_app: FastAPI) -> None:
    """Every route (API and web pages) is a MkoRoute: a sync route's session is closed as it returns."""
    routes = _routes(lab_app)
    assert len(routes) > 80
    assert [r.path for r in routes if not isinstance(r, MkoRoute)] == []


def test_the_pool_keeps_a_connection_for_every_worker_thread(settings: Settings) -> None:
    engine = make_engine(settings.database_url, worker_threads=24)
    try:
        assert engine.pool.size() == 24  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == BACKGROUND_CONNECTIONS  # type: ignore[attr-defined]
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 15000, "foreign_keys": 1}


async def test_a_wake_waiting_for_the_write_lock_stalls_no_other_request(
    lab_app: FastAPI, admin_token: str, settings: Settings
) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    transport = httpx.ASGITransport(app=lab_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mko", headers=headers) as client:
        node = await client.post(
            "/api/nodes",
            json={
                "hostname": "n1",
                "ip_address": "127.0.0.1",
                "wol_enabled": True,
                "wol_mac_address": "02:00:00:00:00:01",
                "wol_broadcast_address": "127.255.255.255",
            },
        )
        assert node.status_code == 201
        # Another writer (the CLI, a second server) holds SQLite's write lock.
        locker = sqlite3.connect(str(make_url(settings.database_url).database), isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            wake = asyncio.create_task(client.post(f"/api/nodes/{node.json()['id']}/wol/wake"))
            await asyncio.sleep(0.3)
            assert not wake.done()  # waiting for the lock, in a worker thread
            health = await client.get("/api/health")
            listed = await client.get("/api/nodes")  # readers go on under WAL
            assert health.status_code == 200 and health.json()["database"]["ok"] is True
            assert listed.status_code == 200 and [n["hostname"] for n in listed.json()] == ["n1"]
            assert not wake.done()  # still waiting: the loop served the others meanwhile
        finally:
            locker.rollback()
            locker.close()
        answer = await wake
    assert answer.status_code == 200, answer.text
    assert answer.json()["nodes"][0]["state"] == "sent"


def test_a_token_in_use_is_not_a_write_per_request(client: TestClient, session: Session) -> None:
    for _ in range(3):
        assert client.get("/api/nodes").status_code == 200
    token = session.query(ApiToken).filter_by(name="test-admin").one()
    first = token.last_used_at
    assert first is not None
    assert client.get("/api/nodes").status_code == 200
    session.refresh(token)
    assert token.last_used_at == first  # within auth.LAST_USED_PRECISION: not written again


def test_health_reports_the_database(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["database"]["ok"] is True
    assert set(health["database"]) == {"ok", "age_seconds", "latency_ms", "error"}


def test_health_says_when_the_database_is_gone(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()  # a directory where the database file should be: it cannot be opened
    app = create_app(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'gone'}"}))
    try:
        answer = TestClient(app).get("/api/health")  # no lifespan: it would need the database
    finally:
        app.state.database_health.close()
    assert answer.status_code == 503
    assert answer.json()["status"] == "degraded" and answer.json()["database"]["ok"] is False
