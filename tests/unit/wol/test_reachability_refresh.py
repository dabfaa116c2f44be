"""The background reachability refresher: state stored on the nodes, started by the server's lifespan."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from mko.access.users import create_user
from mko.app import create_app
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.platform.db.models.access import Role
from mko.platform.db.models.inventory import Node
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.wol.reachability import Refresher


def _node(session: Session, name: str, port: int) -> int:
    return create_node(session, NodeCreate(hostname=name, ip_address="127.0.0.1", probe_port=port)).id


def test_refresh_stores_up_down_and_when_each_node_last_changed(settings: Settings, session: Session) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    up_id = _node(session, "up", server.getsockname()[1])
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        down_id = _node(session, "down", spare.getsockname()[1])  # nothing listens there
    first, second = datetime(2026, 5, 4, 8, 0, tzinfo=UTC), datetime(2026, 5, 4, 8, 0, 30, tzinfo=UTC)
    now = [first]
    engine = make_engine(settings.database_url)
    refresher = Refresher(make_session_factory(engine), interval=30, timeout=1.0, clock=lambda: now[0])
    try:
        results = asyncio.run(refresher.refresh())
        assert (results[up_id].up, results[down_id].up) == (True, False)
        server.close()  # the node that was up goes down
        now[0] = second
        asyncio.run(refresher.refresh())
    finally:
        engine.dispose()
    session.expire_all()
    was_up, was_down = session.get_one(Node, up_id), session.get_one(Node, down_id)
    assert (was_up.reachable, was_up.reachability_changed_at, was_up.reachability_checked_at) == (
        False,
        second,
        second,
    )
    assert (was_down.reachable, was_down.reachability_changed_at, was_down.reachability_checked_at) == (
        False,
        first,
        second,
    )
    assert refresher.last_refresh == second


def test_the_server_refreshes_in_the_background_at_its_interval(settings: Settings, session: Session) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        node_id = _node(session, "up", server.getsockname()[1])
        app = create_app(settings.model_copy(update={"reachability_interval": 0.05}))
        with TestClient(app):
            deadline = time.monotonic() + 10
            checks: set[datetime] = set()
            while len(checks) < 2:  # at least two passes: it repeats, it does not run once
                assert time.monotonic() < deadline, "the refresher did not run"
                session.expire_all()
                node = session.get_one(Node, node_id)
                if node.reachability_checked_at is not None:
                    checks.add(node.reachability_checked_at)
                time.sleep(0.02)
            assert node.reachable is True
            create_user(session, settings, "viewer", "viewer-pass", Role.VIEWER)
            browser = TestClient(app)
            browser.post("/login", data={"username": "viewer", "password": "viewer-pass"})
            page = browser.get("/nodes")
            assert 'class="pill state-up"' in page.text
        app.state.engine.dispose()
    assert max(checks) - min(checks) < timedelta(seconds=10)
