"""A node's state as the dashboard shows it (off, booting, up, Ready), worked out from stored facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from mko.access.users import create_user
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.operations.kinds import RECOVER_KIND
from mko.operations.records import Actor, record_step, start_operation
from mko.platform.db.models.access import Role
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import OperationStatus, OperationStep
from mko.platform.settings import Settings
from mko.wol.node_state import LiveState, StateFacts, live_state

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
INTERVAL, WINDOW = 30.0, 300.0


def _ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def _wake(sent: float, state: str, status: OperationStatus = OperationStatus.SUCCEEDED) -> OperationStep:
    return OperationStep(name="wake n1", status=status, detail={"state": state}, started_at=_ago(sent))


def _ready(at: float, ready: bool = True) -> OperationStep:
    status = OperationStatus.SUCCEEDED if ready else OperationStatus.FAILED
    return OperationStep(name="Ready n1", status=status, detail={}, started_at=_ago(at), finished_at=_ago(at))


def _state(
    reachable: bool | None,
    changed: float | None,
    wake: OperationStep | None = None,
    ready: OperationStep | None = None,
) -> LiveState:
    changed_at = None if changed is None else _ago(changed)
    return live_state(StateFacts(reachable, changed_at, wake, ready), NOW, INTERVAL, WINDOW).state


def test_down_is_off_unless_a_wake_went_out_since_and_is_still_young_or_running() -> None:
    assert _state(None, None) == LiveState.UNKNOWN
    assert _state(False, 600) == LiveState.OFF
    # A wake sent after the node went down: booting while the wake's window lasts.
    assert _state(False, 600, _wake(20, "sent")) == LiveState.BOOTING
    assert _state(False, 600, _wake(20, "up")) == LiveState.BOOTING  # the refresher has not seen it yet
    assert _state(False, 600, _wake(WINDOW + 1, "sent")) == LiveState.OFF  # it never answered
    # A --wait wake still running counts whatever its age; one that gave up does not.
    running = _wake(WINDOW + 100, "pending", OperationStatus.RUNNING)
    assert _state(False, 900, running) == LiveState.BOOTING
    assert _state(False, 600, _wake(20, "not_up", OperationStatus.FAILED)) == LiveState.OFF
    assert _state(False, 600, _wake(20, "failed", OperationStatus.FAILED)) == LiveState.OFF
    # A wake from before the node went down is about an earlier boot.
    assert _state(False, 10, _wake(20, "sent")) == LiveState.OFF


def test_up_is_ready_only_when_kubernetes_said_so_since_it_came_up() -> None:
    assert _state(True, 100) == LiveState.UP
    assert _state(True, 100, ready=_ready(50)) == LiveState.READY
    assert _state(True, 100, ready=_ready(50, ready=False)) == LiveState.UP  # NotReady at the last look
    # Ready was seen before the node last came up: about an earlier life of it.
    assert _state(True, 100, ready=_ready(200)) == LiveState.UP
    # The refresher sees a node come up up to one interval late; a readiness inside that is current.
    assert _state(True, 100, ready=_ready(100 + INTERVAL - 1)) == LiveState.READY
    # Up wins over a wake: it answers.
    assert _state(True, 100, _wake(20, "sent")) == LiveState.UP


def test_the_reachability_api_answers_each_nodes_state_from_stored_facts(
    client: TestClient, session: Session, settings: Settings
) -> None:
    ids = [
        create_node(session, NodeCreate(hostname=f"n{i}", ip_address=f"10.9.0.{i}")).id for i in (1, 2, 3, 4)
    ]
    came_up = datetime.now(UTC) - timedelta(minutes=5)
    session.execute(
        update(Node).where(Node.id.in_(ids[:2])).values(reachable=True, reachability_changed_at=came_up)
    )
    session.execute(
        update(Node).where(Node.id == ids[2]).values(reachable=False, reachability_changed_at=came_up)
    )
    session.commit()
    # A recovery saw n1 Ready, and n2 NotReady, after they came up; n3 is down and nobody woke it.
    recovery = start_operation(
        session, kind=RECOVER_KIND, target_type="cluster", target_id=1, actor=Actor("t")
    )
    record_step(session, recovery, name="Ready n1", status=OperationStatus.SUCCEEDED, node_id=ids[0])
    record_step(session, recovery, name="Ready n2", status=OperationStatus.FAILED, node_id=ids[1])
    answer = client.get("/api/nodes/reachability", params={"node_id": ids})
    assert answer.status_code == 200, answer.text
    states = {int(k): (v["state"], v["state_note"]) for k, v in answer.json().items()}
    assert states[ids[0]][0] == "Ready" and states[ids[0]][1].startswith("Kubernetes Ready at ")
    assert states[ids[1]][0] == "up" and "not Ready" in states[ids[1]][1]
    assert states[ids[2]] == ("off", "does not answer on its probe port")
    assert states[ids[3]] == ("unknown", "not probed yet")
    # Now someone wakes n3: booting until it answers.
    wake = start_operation(
        session, kind="wol_wake_node", target_type="node", target_id=ids[2], actor=Actor("t")
    )
    record_step(
        session,
        wake,
        name="wake n3",
        status=OperationStatus.RUNNING,
        node_id=ids[2],
        detail={"state": "pending"},
    )
    answer = client.get("/api/nodes/reachability", params={"node_id": ids[2]})
    booting = answer.json()[str(ids[2])]
    assert (booting["state"], booting["wake_operation_id"], booting["wake_state"]) == (
        "booting",
        wake.id,
        "pending",
    )
    # The web pages render the same state before any script runs.
    create_user(session, settings, "viewer", "viewer-pass", Role.VIEWER)
    browser = TestClient(client.app)
    browser.post("/login", data={"username": "viewer", "password": "viewer-pass"})
    page = browser.get("/nodes")
    assert 'class="pill state-ready"' in page.text and 'class="pill state-booting"' in page.text
