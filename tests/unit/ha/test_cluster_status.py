"""`GET /api/cluster-status` and `mko cluster-status` with SQLite: one instance, and it is the leader."""

from __future__ import annotations

import json
import os
import socket

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.app import create_app
from mko.cli.root import app as cli_app
from mko.platform.settings import Settings


def test_the_only_sqlite_instance_is_online_and_leads(client: TestClient) -> None:
    status = client.get("/api/cluster-status").json()
    assert (status["database"], status["high_availability"], status["online"]) == ("sqlite", False, 1)
    [instance] = status["instances"]
    assert instance["name"] == f"{socket.gethostname()}:{os.getpid()}"
    assert (instance["online"], instance["leader"]) == (True, True)
    assert status["leader"] == instance["name"] and instance["leader_since"] is not None
    # The UPS monitor and rules run in this leader (with SQLite, exactly as before).
    assert client.app.state.election.is_leader  # type: ignore[attr-defined]


def test_cli_shows_the_leader_then_the_stopped_instance_offline(
    settings: Settings, session: Session, cli: CliRunner
) -> None:
    app = create_app(settings)
    with TestClient(app):
        result = cli.invoke(cli_app, ["cluster-status", "--json"])
        table = cli.invoke(cli_app, ["cluster-status"])
    app.state.engine.dispose()
    assert result.exit_code == 0, result.output
    running = json.loads(result.stdout)
    assert running["leader"] == app.state.election.name and running["online"] == 1
    assert table.exit_code == 0 and "leader" in table.stdout and app.state.election.name in table.stdout
    stopped = json.loads(cli.invoke(cli_app, ["cluster-status", "--json"]).stdout)
    [instance] = stopped["instances"]
    assert stopped["leader"] is None and not instance["online"] and instance["stopped_at"] is not None
