"""The UPS and power-rule adapters: REST API and CLI over the same services, refusals included."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.cli.root import app
from mko.platform.db.models.ups import UPS, PowerEvent
from mko.platform.settings import Settings
from mko.ups.events import DetectedEvent
from mko.ups.service import record_events

pytestmark = pytest.mark.usefixtures("session")  # a migrated database of this test

SEED_RULE = {
    "ups_id": 1,
    "cluster_id": 1,
    "power_event": "power_restored",
    "cluster_action": "wake_on_lan",
    "name": "Wake cluster after power restoration",
}


def _ups(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "rack", "ups_name": "myups", "host": "127.0.0.1", "port": 1} | fields
    response = client.post("/api/ups", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _loc(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    loc: list[str] = response.json()["detail"][0]["loc"]
    return loc


def test_ups_inventory_over_the_api_never_shows_the_password(client: TestClient, session: Session) -> None:
    ups = _ups(client, username="monuser", password="s3cret pw")
    assert (ups["device"], ups["username"], ups["password_set"]) == ("myups@127.0.0.1:1", "monuser", True)
    stored = session.get(UPS, ups["id"])
    assert stored is not None and stored.password_encrypted and "s3cret" not in stored.password_encrypted
    assert client.get("/api/ups").json() == [ups]
    assert client.get(f"/api/ups/{ups['id']}").json() == ups
    assert client.post("/api/ups", json={"name": "rack", "ups_name": "other"}).status_code == 409
    duplicate = client.post("/api/ups", json={"name": "other", "ups_name": "myups", "port": 1})
    assert duplicate.status_code == 409 and "already in the inventory" in duplicate.text
    for body, field in (
        ({"name": "a", "ups_name": "my ups"}, "ups_name"),
        ({"name": "a", "ups_name": "u", "port": 0}, "port"),
        ({"name": "a", "ups_name": "u", "host": "bad host!"}, "host"),
        ({"name": "a", "ups_name": "u", "username": "a b"}, "username"),
        ({"name": "a", "ups_name": "u", "password": "two\nlines"}, "password"),
    ):
        assert _loc(client.post("/api/ups", json=body))[-1] == field
    assert len(client.get("/api/ups").json()) == 1
    assert client.get("/api/ups/99").status_code == 404
    assert "s3cret" not in json.dumps(client.get("/api/ups").json())


def test_status_of_an_unreachable_server_says_so(client: TestClient) -> None:
    ups = _ups(client)
    # The API tells the server's monitor at once (the periodic re-read is every 5 s).
    deadline = time.monotonic() + 2
    while not (watched := client.get("/api/ups/monitor").json()["ups"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [u["ups_id"] for u in watched] == [ups["id"]]
    status = client.get(f"/api/ups/{ups['id']}/status").json()
    assert status["reachable"] is False and "cannot reach upsd at 127.0.0.1:1" in status["error"]
    assert status["status"] is None and status["device"] == "myups@127.0.0.1:1"
    monitor = client.get("/api/ups/monitor").json()
    assert monitor["running"] is True  # `mko serve` runs the monitor


def test_seed_rule_over_the_api_and_its_refusals(client: TestClient) -> None:
    client.post("/api/clusters", json={"name": "home"})
    _ups(client)
    rule = client.post("/api/ups/rules", json=SEED_RULE)
    assert rule.status_code == 201, rule.text
    created = rule.json()
    assert created["name"] == SEED_RULE["name"] and created["enabled"] is True
    assert (created["execution_count"], created["success_count"], created["failure_count"]) == (0, 0, 0)
    assert created["recover_after_wake"] is True
    shutdown = client.post(
        "/api/ups/rules",
        json=SEED_RULE | {"power_event": "power_loss", "cluster_action": "graceful_shutdown", "name": "down"},
    )
    assert shutdown.status_code == 201, shutdown.text
    assert shutdown.json()["cluster_action"] == "graceful_shutdown"
    no_recovery = client.post(
        "/api/ups/rules", json=SEED_RULE | {"name": "wake only", "recover_after_wake": False}
    )
    assert no_recovery.status_code == 201 and no_recovery.json()["recover_after_wake"] is False
    for extra in (shutdown, no_recovery):
        assert client.delete(f"/api/ups/rules/{extra.json()['id']}").status_code == 204
    assert _loc(client.post("/api/ups/rules", json=SEED_RULE | {"cluster_action": "reboot"}))[-1] == (
        "cluster_action"
    )
    assert _loc(client.post("/api/ups/rules", json=SEED_RULE | {"power_event": "power_lost"}))[-1] == (
        "power_event"
    )
    assert _loc(client.post("/api/ups/rules", json=SEED_RULE | {"cluster_id": 7})) == ["body", "cluster_id"]
    assert _loc(client.post("/api/ups/rules", json=SEED_RULE | {"battery_threshold": 40}))[-1] == (
        "battery_threshold"
    )
    assert [r["id"] for r in client.get("/api/ups/rules?ups_id=1").json()] == [created["id"]]
    assert client.get("/api/ups/rules?cluster_id=2").json() == []
    assert client.post(f"/api/ups/rules/{created['id']}/disable").json()["enabled"] is False
    assert client.post(f"/api/ups/rules/{created['id']}/enable").json()["enabled"] is True
    assert client.delete("/api/ups/1").status_code == 409  # a rule still uses it
    assert client.delete(f"/api/ups/rules/{created['id']}").status_code == 204
    assert client.get(f"/api/ups/rules/{created['id']}").status_code == 404
    assert client.delete("/api/ups/1").status_code == 204


def test_events_are_listed_newest_first_with_filters(client: TestClient, session: Session) -> None:
    ups = _ups(client)
    at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    record_events(
        session,
        ups["id"],
        [
            DetectedEvent(PowerEvent.POWER_LOSS, at, "OL", "OB DISCHRG", 99.0, "on battery"),
            DetectedEvent(PowerEvent.POWER_RESTORED, at, "OB DISCHRG", "OL CHRG", 95.0, "back on mains"),
        ],
    )
    events = client.get("/api/ups/events").json()
    assert [e["event"] for e in events] == ["power_restored", "power_loss"]
    assert events[1]["status_before"] == "OL" and events[1]["status_after"] == "OB DISCHRG"
    only = client.get("/api/ups/events?event=power_loss").json()
    assert [e["event"] for e in only] == ["power_loss"]
    assert client.get("/api/ups/events?ups_id=42").status_code == 404
    assert client.get("/api/ups/events?limit=0").status_code == 422


def test_cli_ups_and_rules_with_one_line_errors(cli: CliRunner, session: Session) -> None:
    assert cli.invoke(app, ["cluster", "add", "home"]).exit_code == 0
    added = cli.invoke(app, ["ups", "add", "rack", "myups@127.0.0.1:1", "--password", "pw!", "--json"])
    assert added.exit_code == 0, added.stderr
    assert json.loads(added.stdout)["device"] == "myups@127.0.0.1:1" and "pw!" not in added.stdout
    bad = cli.invoke(app, ["ups", "add", "x", "my ups@host"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "upsname[@host[:port]]" in bad.stderr
    seed = [
        "ups",
        "create-rule",
        "--ups-id",
        "1",
        "--cluster-id",
        "1",
        "--power-event",
        "power_restored",
        "--cluster-action",
        "wake_on_lan",
        "--name",
        "Wake cluster after power restoration",
    ]
    created = cli.invoke(app, [*seed, "--delay", "30", "--priority", "5", "--disable", "--json"])
    assert created.exit_code == 0, created.stderr
    rule = json.loads(created.stdout)
    assert (rule["action_delay"], rule["priority"], rule["enabled"]) == (30, 5, False)
    forced = cli.invoke(app, [*seed[:-4], "--cluster-action", "force_shutdown", "--json"])
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(forced.stdout)["cluster_action"] == "force_shutdown"
    wake_only = cli.invoke(app, [*seed, "--no-recover", "--json"])
    assert wake_only.exit_code == 0, wake_only.stderr
    assert json.loads(wake_only.stdout)["recover_after_wake"] is False
    for extra in (forced, wake_only):
        assert cli.invoke(app, ["ups", "delete-rule", str(json.loads(extra.stdout)["id"])]).exit_code == 0
    refused = cli.invoke(app, [*seed[:-4], "--cluster-action", "reboot"])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "cluster-action" in refused.stderr
    threshold = cli.invoke(
        app, [*seed[:6], "--power-event", "low_battery", "--cluster-action", "wake_on_lan"]
    )
    assert threshold.exit_code == 0, threshold.stderr
    low = cli.invoke(app, ["ups", "create-rule", *seed[2:6], "--power-event", "low_battery"])
    assert low.exit_code == 2  # --cluster-action is required
    listed = cli.invoke(app, ["ups", "list-rules", "--json"])
    assert [r["power_event"] for r in json.loads(listed.stdout)] == ["power_restored", "low_battery"]
    assert json.loads(cli.invoke(app, ["ups", "enable-rule", "1", "--json"]).stdout)["enabled"] is True
    assert json.loads(cli.invoke(app, ["ups", "disable-rule", "1", "--json"]).stdout)["enabled"] is False
    assert cli.invoke(app, ["ups", "delete-rule", "1"]).exit_code == 0
    assert cli.invoke(app, ["ups", "delete-rule", "1"]).exit_code == 2
    removed = cli.invoke(app, ["ups", "remove", "1"])
    assert removed.exit_code == 2 and "used by 1 power rule" in removed.stderr
    assert cli.invoke(app, ["ups", "remove", "1", "--force"]).exit_code == 0
    assert json.loads(cli.invoke(app, ["ups", "list", "--json"]).stdout) == []


def test_cli_status_and_events(cli: CliRunner, session: Session) -> None:
    assert cli.invoke(app, ["ups", "add", "rack", "myups@127.0.0.1:1"]).exit_code == 0
    status = cli.invoke(app, ["ups", "status", "1"])
    assert status.exit_code == 0 and "NO — cannot reach upsd at 127.0.0.1:1" in " ".join(
        status.stdout.split()
    )
    record_events(
        session,
        1,
        [DetectedEvent(PowerEvent.COMM_LOST, datetime.now(UTC), "OL", None, 80.0, "communication lost")],
    )
    table = cli.invoke(app, ["ups", "events"])
    assert table.exit_code == 0 and "comm_lost" in table.stdout and "OL → ?" in table.stdout
    assert cli.invoke(app, ["ups", "events", "--event", "nonsense"]).exit_code == 2


def test_restore_rules_power_cycle_and_outages_over_the_cli_and_api(
    cli: CliRunner, client: TestClient, session: Session
) -> None:
    assert cli.invoke(app, ["cluster", "add", "home"]).exit_code == 0
    refused = cli.invoke(app, ["ups", "add", "rack", "myups@127.0.0.1:1", "--power-cycle"])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "power_cycle" in refused.stderr
    added = cli.invoke(app, ["ups", "add", "rack", "myups@127.0.0.1:1", "--json"])
    assert json.loads(added.stdout)["power_cycle"] is False
    off = cli.invoke(app, ["ups", "power-cycle", "1"])
    assert off.exit_code == 2 and "no upsd username and password" in off.stderr
    assert client.put("/api/ups/1/power-cycle", json={"enabled": True}).status_code == 422
    assert client.put("/api/ups/1/power-cycle", json={"enabled": False}).json()["power_cycle"] is False
    with_login = {
        "name": "office",
        "ups_name": "u2",
        "username": "mko",
        "password": "pw",
        "power_cycle": True,
    }
    assert client.post("/api/ups", json=with_login).json()["power_cycle"] is True
    assert (
        json.loads(cli.invoke(app, ["ups", "power-cycle", "2", "--disable", "--json"]).stdout)["power_cycle"]
        is False
    )
    restore = [
        *["ups", "create-rule", "--ups-id", "1", "--cluster-id", "1", "--power-event", "power_restored"],
        *["--cluster-action", "wake_on_lan", "--min-charge", "50", "--stable-for", "30", "--json"],
    ]
    created = cli.invoke(app, restore)
    assert created.exit_code == 0, created.stderr
    assert (json.loads(created.stdout)["min_charge"], json.loads(created.stdout)["stable_for"]) == (50, 30)
    wrong = cli.invoke(app, [*restore[:7], "power_loss", *restore[8:-1]])
    assert wrong.exit_code == 2 and "min_charge" in wrong.stderr and wrong.stderr.count("\n") == 1
    bad = client.post("/api/ups/rules", json=SEED_RULE | {"min_charge": 101})
    assert _loc(bad)[-1] == "min_charge"
    # No cluster has been shut down for a UPS yet.
    assert client.get("/api/ups/outages").json() == [] and client.get("/api/ups/outages/1").status_code == 404
    empty = cli.invoke(app, ["ups", "outages", "--open", "--json"])
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []
    assert client.get("/api/ups/monitor").json()["powerdown"] is None


def test_the_host_shutdown_command_is_an_argument_vector_with_an_absolute_program(cli: CliRunner) -> None:
    with pytest.raises(ValidationError, match="absolute path"):
        Settings(host_shutdown_command=["systemctl", "poweroff"])
    with pytest.raises(ValidationError, match="non-empty"):
        Settings(host_shutdown_command=["/usr/bin/systemctl", ""])
    assert Settings(host_shutdown_command=["/usr/bin/systemctl", "poweroff"]).host_shutdown_command == [
        "/usr/bin/systemctl",
        "poweroff",
    ]
