"""Notifications delivered by apprise to a real HTTP receiver on 127.0.0.1, started by each test."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session

from mko.inventory.clusters import create_cluster
from mko.inventory.schemas import ClusterCreate
from mko.notify.messages import rule_finished, rule_triggered, ups_event_hook
from mko.notify.rule_settings import configure_rule
from mko.platform.db.models.operations import OperationStatus
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import UPS, PowerEvent, UpsEvent
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.schedules.scheduler import Scheduler
from mko.schedules.schemas import ScheduleCreate
from mko.schedules.service import create_schedule
from mko.ups.service import UpsTarget


class Receiver:
    """An HTTP server that records every POST (path and JSON body); ``hold`` makes it answer late."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.hold = threading.Event()
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.hold.wait(10)
                receiver.received.put((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver", daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"json://{self.address}/{path}"

    def next(self) -> tuple[str, dict[str, Any]]:
        return self.received.get(timeout=10)

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def _rule(session: Session) -> PowerRule:
    cluster = create_cluster(session, ClusterCreate(name="lab"))
    ups = UPS(name="rack", ups_name="myups", host="127.0.0.1", port=3493, description="")
    session.add(ups)
    session.flush()
    rule = PowerRule(
        name="Wake cluster after power restoration",
        ups_id=ups.id,
        cluster_id=cluster.id,
        power_event=PowerEvent.POWER_RESTORED,
        cluster_action=ClusterAction.WAKE_ON_LAN,
    )
    session.add(rule)
    session.commit()
    return rule


def _lines(payload: dict[str, Any]) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in payload["message"].splitlines())


def test_a_rule_notifies_trigger_and_failure_with_event_cluster_and_outcome(
    settings: Settings, session: Session, receiver: Receiver
) -> None:
    rule = _rule(session)
    configure_rule(
        session, settings, rule.id, on_trigger=True, on_completion=False, urls=[receiver.url("rule")]
    )
    triggered = rule_triggered(settings, rule, event="power_restored")
    assert triggered is not None and triggered.wait(10) and triggered.ok
    path, payload = receiver.next()
    assert path == "/rule"
    assert _lines(payload) == {
        "event": "power_restored",
        "cluster": "lab",
        "rule": f"Wake cluster after power restoration (#{rule.id})",
        "action": "wake_on_lan",
        "outcome": "triggered",
    }
    assert "power_restored" in payload["title"] and "lab" in payload["title"]
    failed = rule_finished(
        settings, rule, event="power_restored", outcome="partial", summary="2/3 node(s) up", operation_id=7
    )
    assert failed is not None and failed.wait(10) and failed.ok
    _, payload = receiver.next()
    assert payload["type"] == "failure"
    fields = _lines(payload)
    assert (fields["event"], fields["cluster"], fields["outcome"]) == ("power_restored", "lab", "partial")
    assert (fields["summary"], fields["operation"]) == ("2/3 node(s) up", "#7")
    # notify_on_completion is off: a success sends nothing.
    assert rule_finished(settings, rule, event="power_restored", outcome=OperationStatus.SUCCEEDED) is None
    assert receiver.received.empty()


def test_global_urls_get_every_notification_and_sending_never_blocks(
    settings: Settings, session: Session, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    rule = _rule(session)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = f"json://127.0.0.1:{closed.getsockname()[1]}/x"
    settings = settings.model_copy(
        update={"notify_urls": [SecretStr(receiver.url("global")), SecretStr(dead)]}
    )
    receiver.hold.clear()  # the receiver answers only when the test lets it
    delivery = rule_finished(settings, rule, event="power_restored", outcome="failed", summary="no node up")
    assert delivery is not None and delivery.targets == 2
    assert not delivery.wait(0)  # the caller got control back while the receiver still holds the request
    receiver.hold.set()
    with caplog.at_level(logging.WARNING, logger="mko.notify"):
        assert delivery.wait(15)
    assert delivery.ok is False and delivery.failed == ["JSON"]  # the dead URL failed, the other arrived
    path, payload = receiver.next()
    assert path == "/global" and _lines(payload)["outcome"] == "failed"
    assert "not delivered" in caplog.text and dead not in caplog.text


def test_rule_urls_are_stored_encrypted_and_shown_masked(client: TestClient, session: Session) -> None:
    rule = _rule(session)
    secret_url = "json://alice:topsecret@127.0.0.1:9/hook"
    response = client.put(
        f"/api/notifications/rules/{rule.id}",
        json={"notify_on_completion": True, "notify_urls": [secret_url]},
    )
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["notify_on_completion"] is True and shown["notify_on_failure"] is True
    assert len(shown["notify_urls"]) == 1 and "topsecret" not in response.text
    session.expire_all()
    stored = session.get_one(PowerRule, rule.id)
    assert stored.notify_urls_encrypted and "topsecret" not in stored.notify_urls_encrypted
    bad = client.put(f"/api/notifications/rules/{rule.id}", json={"notify_urls": ["nosuch://x"]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "notify_urls"
    assert client.get("/api/notifications/rules/999").status_code == 404


def test_missed_schedule_and_ups_events_notify_the_global_urls(
    settings: Settings, session: Session, receiver: Receiver
) -> None:
    settings = settings.model_copy(update={"notify_urls": [SecretStr(receiver.url("ops"))]})
    cluster = create_cluster(session, ClusterCreate(name="lab"))
    berlin = ZoneInfo("Europe/Berlin")
    create_schedule(
        session,
        settings,
        ScheduleCreate(name="morning", cron="30 7 * * *", timezone="Europe/Berlin", cluster_id=cluster.id),
        now=datetime(2026, 5, 4, 6, 0, tzinfo=berlin),
    )
    later = datetime(2026, 5, 5, 12, 0, tzinfo=berlin)
    scheduler = Scheduler(
        make_session_factory(make_engine(settings.database_url)), settings, clock=lambda: later
    )
    asyncio.run(scheduler.tick())
    _, payload = receiver.next()
    fields = _lines(payload)
    assert (fields["event"], fields["cluster"], fields["outcome"]) == ("schedule_missed", "lab", "cancelled")
    assert fields["summary"].startswith("missed 2 run(s)")
    hook = ups_event_hook(settings)
    event = UpsEvent(
        ups_id=1,
        event=PowerEvent.POWER_LOSS,
        occurred_at=later + timedelta(minutes=1),
        status_before="OL",
        status_after="OB DISCHRG",
        message="on battery",
    )
    hook(UpsTarget(1, "rack", "myups", "127.0.0.1", 3493), event)
    _, payload = receiver.next()
    assert _lines(payload) == {
        "event": "power_loss",
        "ups": "rack",
        "status before": "OL",
        "status after": "OB DISCHRG",
        "detail": "on battery",
    }
