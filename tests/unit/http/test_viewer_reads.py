"""Viewers do not make mko connect out; operators' fresh reads are shared and rate-limited.

The node's probe port is a real listening socket here that counts the connections it accepts, so every
outbound connection a request causes is seen.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from mko.access.tokens import create_token
from mko.access.users import create_user
from mko.app import create_app
from mko.platform.db.models.access import Role
from mko.platform.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingPort:
    """A TCP port on loopback that accepts connections and counts them."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def settled(self) -> int:
        """The count once the connections made so far were accepted (the kernel completes a connect
        before this port's thread gets round to accepting it)."""
        deadline = time.monotonic() + 2
        seen = -1
        while self.accepted != seen and time.monotonic() < deadline:
            seen = self.accepted
            time.sleep(0.2)
        return self.accepted

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def node_port() -> Iterator[CountingPort]:
    port = CountingPort()
    yield port
    port.close()


@pytest.fixture
def roles(session: Session) -> dict[str, dict[str, str]]:
    return {
        role.value: {"Authorization": f"Bearer {create_token(session, f'r-{role.value}', role)[1]}"}
        for role in (Role.VIEWER, Role.OPERATOR)
    }


def _node(client: TestClient, port: int) -> int:
    created = client.post(
        "/api/nodes",
        json={
            "hostname": "pc1",
            "ip_address": "127.0.0.1",
            "wol_mac_address": "02:00:00:00:00:07",
            "probe_port": port,
        },
    )
    assert created.status_code == 201, created.text
    node_id: int = created.json()["id"]
    return node_id


VIEWER_READS = ["/api/nodes/{id}/power", "/api/nodes/reachability", "/api/nodes/{id}/wol/status"]


def test_a_viewer_reads_the_last_known_state_and_nothing_connects_out(
    client: TestClient, roles: dict[str, dict[str, str]], node_port: CountingPort, session: Session
) -> None:
    node_id = _node(client, node_port.port)
    viewer = roles["viewer"]
    for path in VIEWER_READS:
        answer = client.get(path.format(id=node_id), headers=viewer)
        assert answer.status_code == 200, (path, answer.text)
    power = client.get(f"/api/nodes/{node_id}/power", headers=viewer).json()
    assert power["state"] == "unknown" and power["checked_at"] is None and power["age_seconds"] is None
    reach = client.get("/api/nodes/reachability", headers=viewer).json()[str(node_id)]
    assert reach["up"] is None and reach["checked_at"] is None
    # Asking for a fresh reading is an operator's act.
    for path, flag in (
        (f"/api/nodes/{node_id}/power", "refresh"),
        ("/api/nodes/reachability", "refresh"),
        (f"/api/nodes/{node_id}/wol/status", "probe"),
        (f"/api/nodes/{node_id}/ssh/host-key", None),
    ):
        params = {flag: "true"} if flag else {}
        answer = client.get(path, params=params, headers=viewer)
        assert answer.status_code == 403, (path, answer.text)
        assert "operator" in answer.json()["detail"]
    assert node_port.settled() == 0


def test_the_web_pages_of_a_viewer_connect_nowhere(
    settings: Settings, session: Session, client: TestClient, node_port: CountingPort
) -> None:
    node_id = _node(client, node_port.port)
    create_user(session, settings, "web-viewer", "viewer-pw-1", Role.VIEWER)
    app = create_app(settings)
    with TestClient(app) as web:
        signed_in = web.post("/login", data={"username": "web-viewer", "password": "viewer-pw-1"})
        assert signed_in.status_code == 200, signed_in.text
        for path in ("/", "/nodes", f"/nodes/{node_id}", "/clusters", "/ups"):
            assert web.get(path).status_code == 200, path
        # The live parts the pages' script fetches.
        assert web.get("/api/nodes/reachability").status_code == 200
        # Planning a shutdown probes the control planes: its confirmation page is for operators.
        cluster = client.post("/api/clusters", json={"name": "c1"}).json()
        assert web.get(f"/clusters/{cluster['id']}/shutdown").status_code == 403
    app.state.engine.dispose()
    assert node_port.settled() == 0


async def test_operators_asking_at_once_share_one_probe_and_are_rate_limited(
    settings: Settings, roles: dict[str, dict[str, str]], node_port: CountingPort, admin_token: str
) -> None:
    app = create_app(settings.model_copy(update={"live_read_interval": 60.0}))
    transport = httpx.ASGITransport(app=app)
    admin = {"Authorization": f"Bearer {admin_token}"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mko") as client:
            created = await client.post(
                "/api/nodes",
                headers=admin,
                json={
                    "hostname": "pc1",
                    "ip_address": "127.0.0.1",
                    "wol_mac_address": "02:00:00:00:00:07",
                    "probe_port": node_port.port,
                },
            )
            node_id = created.json()["id"]

            async def refresh(path: str, flag: str = "refresh") -> dict[str, Any]:
                answer = await client.get(path, params={flag: "true"}, headers=roles["operator"])
                assert answer.status_code == 200, answer.text
                body: dict[str, Any] = answer.json()
                return body

            powers = await asyncio.gather(*(refresh(f"/api/nodes/{node_id}/power") for _ in range(5)))
            assert {p["state"] for p in powers} == {"on"}  # the port answered
            assert node_port.settled() == 1  # five callers, one probe
            again = await refresh(f"/api/nodes/{node_id}/power")
            assert node_port.settled() == 1 and again["checked_at"] == powers[0]["checked_at"]
            # What an operator read is now every viewer's last known state, with its age.
            shown = (await client.get(f"/api/nodes/{node_id}/power", headers=roles["viewer"])).json()
            assert shown["state"] == "on" and shown["age_seconds"] >= 0

            reach = await asyncio.gather(*(refresh("/api/nodes/reachability") for _ in range(3)))
            assert all(r[str(node_id)]["up"] is True for r in reach) and node_port.settled() == 2
            # ... and stored on the node, for every page and for /metrics.
            stored = (await client.get("/api/nodes/reachability", headers=roles["viewer"])).json()
            assert stored[str(node_id)]["up"] is True and stored[str(node_id)]["checked_at"] is not None

            probed = await refresh(f"/api/nodes/{node_id}/wol/status", "probe")
            assert probed["reachable"]["ok"] is True and node_port.settled() == 3
    finally:
        app.state.engine.dispose()
