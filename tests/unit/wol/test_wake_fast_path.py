"""A cluster wake answers at once: its nodes come from one core query, and the first packet leaves before
the steps of every node are written (checked against the real packets, never timed)."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from mko.inventory.nodes import list_nodes
from mko.inventory.snapshots import node_rows, snapshots
from mko.operations.records import Actor, get_operation
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.power.base import NodeSnapshot
from mko.power.drivers.wol import SEND_CHUNK, WolDriver, WolParams
from mko.wol.node_state import states_for
from mko.wol.wake import make_schedule, run_wake, start_wake


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A UDP socket on loopback that receives what is sent to 127.255.255.255:<its port>."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    yield sock
    sock.close()


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test's database, as a CLI wake opens its own."""
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _cluster(client: TestClient, port: int, count: int) -> int:
    cluster = client.post("/api/clusters", json={"name": "rack", "site": "local"}).json()
    for i in range(1, count + 1):
        body = {
            "hostname": f"n{i}",
            "ip_address": "127.0.0.1",
            "cluster_id": cluster["id"],
            "role": "control-plane" if i == 1 else "worker",
            "wol_enabled": i != 3,  # one is skipped
            "wol_mac_address": f"02:00:00:00:00:{i:02x}",
            "wol_port": port,
            "wol_broadcast_address": "127.255.255.255",
        }
        assert client.post("/api/nodes", json=body).status_code == 201
    return int(cluster["id"])


def _start(factory: sessionmaker[Session], settings: Settings, cluster_id: int, **schedule: Any) -> Any:
    """A cluster wake checked and recorded (its steps not written yet), as the CLI and the API start it."""
    with factory() as session:
        return start_wake(
            session,
            target_type="cluster",
            target_id=cluster_id,
            schedule=make_schedule(settings, **schedule),
            actor=Actor("cli:test", "local"),
        )


def _steps_by_node(factory: sessionmaker[Session], operation_id: int) -> dict[int | None, Any]:
    with factory() as session:
        return {step.node_id: step for step in get_operation(session, operation_id).steps}


def test_the_one_query_snapshots_are_the_ones_the_orm_builds(
    client: TestClient, session: Session, receiver: socket.socket
) -> None:
    cluster_id = _cluster(client, receiver.getsockname()[1], 5)
    rows = node_rows(session, cluster_id=cluster_id)
    assert [r.hostname for r in rows] == [f"n{i}" for i in range(1, 6)]
    assert snapshots(session, rows) == snapshots(session, list_nodes(session, cluster_id))


def test_a_cluster_wakes_first_packet_leaves_before_its_steps_are_written(
    client: TestClient, settings: Settings, receiver: socket.socket, factory: sessionmaker[Session]
) -> None:
    cluster_id = _cluster(client, receiver.getsockname()[1], 6)
    engine = factory.kw["bind"]
    seen: list[bool] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO OPERATION_STEPS"):
            readable, _, _ = select.select([receiver], [], [], 0)
            seen.append(bool(readable))  # a magic packet already waits in the receiver's queue

    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        prepared = _start(factory, settings, cluster_id, retries=1, delay=0)
        assert seen == []  # the operation is recorded, its steps are not yet
        operation = asyncio.run(run_wake(factory, settings, prepared))
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
    # One INSERT of every step, after the packets: one round of packets is over once they are out,
    # so each step is written once, with its outcome (no INSERT of running steps and UPDATE of each).
    assert seen == [True]
    assert operation.status == OperationStatus.PARTIAL  # n3 skipped
    by_node = _steps_by_node(factory, operation.id)
    assert sorted(by_node) == [1, 2, 3, 4, 5, 6]
    assert by_node[3].status == OperationStatus.CANCELLED and "disabled" in by_node[3].message
    assert all(by_node[i].status == OperationStatus.SUCCEEDED for i in (1, 2, 4, 5, 6))
    assert all(by_node[i].detail["state"] == "sent" for i in (1, 2, 4, 5, 6))
    assert all(by_node[i].finished_at is not None for i in by_node)


def test_a_wake_still_running_shows_its_steps_running_and_closes_each_with_its_outcome(
    client: TestClient, settings: Settings, receiver: socket.socket, factory: sessionmaker[Session]
) -> None:
    cluster_id = _cluster(client, receiver.getsockname()[1], 4)
    # Two rounds a second apart: not over when its first packets are out, so its steps are written
    # running right after them (the nodes show as booting), and closed at the end.
    prepared = _start(factory, settings, cluster_id, retries=2, delay=1.0)
    seen_running: dict[int | None, OperationStatus] = {}

    def on_packet(_kind: str, outcome: Any) -> None:
        if outcome.attempts == 2 and not seen_running:  # the second round: the steps are written by now
            steps = _steps_by_node(factory, prepared.operation_id)
            seen_running.update({node_id: step.status for node_id, step in steps.items()})

    operation = asyncio.run(run_wake(factory, settings, prepared, on_packet))
    running = {i for i, status in seen_running.items() if status == OperationStatus.RUNNING}
    assert running == {1, 2, 4}  # the skipped n3 was closed from the start
    by_node = _steps_by_node(factory, operation.id)
    assert sorted(by_node) == [1, 2, 3, 4]
    for i in (1, 2, 4):
        step = by_node[i]
        assert step.status == OperationStatus.SUCCEEDED and step.finished_at is not None
        assert step.message == "2 sent (not verified)"
        assert step.detail["state"] == "sent" and step.detail["attempts"] == 2
        assert step.detail["hostname"] == f"n{i}"
    assert by_node[3].status == OperationStatus.CANCELLED


def test_a_wake_cancelled_before_its_steps_were_written_still_records_them(
    client: TestClient, settings: Settings, receiver: socket.socket, factory: sessionmaker[Session]
) -> None:
    cluster_id = _cluster(client, receiver.getsockname()[1], 4)
    prepared = _start(factory, settings, cluster_id, retries=3, delay=30)

    async def cancel_at_once() -> None:
        task = asyncio.create_task(run_wake(factory, settings, prepared))
        await asyncio.sleep(0)  # it has started: packets out, steps not yet written
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_at_once())
    with factory() as session:
        operation = session.get_one(Operation, prepared.operation_id)
        assert operation.status == OperationStatus.CANCELLED
        steps = {step.node_id: step.status for step in operation.steps}
        assert sorted(steps) == [1, 2, 3, 4]
        assert steps[1] == OperationStatus.CANCELLED and steps[3] == OperationStatus.CANCELLED


def test_a_large_wake_sends_its_first_packets_before_it_builds_every_nodes_packet(
    receiver: socket.socket,
) -> None:
    """The WoL driver builds and sends SEND_CHUNK nodes at a time: when the packet of the first node of
    the second chunk is built, the first chunk's packets already wait in the receiver's queue."""
    port = receiver.getsockname()[1]
    nodes = [
        NodeSnapshot(
            node_id=i,
            hostname=f"n{i}",
            ip_address="127.0.0.1",
            role="worker",
            method="wol",
            probe_port=1,
            params=WolParams(
                wol_mac_address=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}",
                wol_broadcast_address="127.255.255.255",
                wol_port=port,
            ),
        )
        for i in range(1, SEND_CHUNK + 3)
    ]
    queued_when_built: dict[int, bool] = {}

    class Watched(WolDriver):
        def _target(self, node: NodeSnapshot) -> Any:
            readable, _, _ = select.select([receiver], [], [], 0)
            queued_when_built[node.node_id] = bool(readable)
            return super()._target(node)

    driver = Watched(None, 1.0, lambda: pytest.fail("no SecureOn password here"))
    try:
        errors = asyncio.run(driver.send_on(nodes))
    finally:
        driver.close()
    assert errors == dict.fromkeys(range(1, SEND_CHUNK + 3))  # every packet went out
    assert not queued_when_built[1]
    assert queued_when_built[SEND_CHUNK + 1]  # the first chunk was on the wire before this was built


def test_a_burst_wake_records_a_failed_node_in_its_step_and_its_state(
    client: TestClient, settings: Settings, receiver: socket.socket, factory: sessionmaker[Session]
) -> None:
    """The steps written once at the end carry each node's own outcome: a node whose packet could not
    be sent (its interface does not exist) is failed in its step, its operation and its node state."""
    cluster_id = _cluster(client, receiver.getsockname()[1], 3)
    body = {"wol_interface": "mko-none0"}
    assert client.put("/api/nodes/2/wol/configure", json=body).status_code == 200
    prepared = _start(factory, settings, cluster_id, retries=1, delay=0)
    operation = asyncio.run(run_wake(factory, settings, prepared))
    assert operation.status == OperationStatus.PARTIAL  # n3 skipped, n2 failed
    by_node = _steps_by_node(factory, operation.id)
    assert by_node[1].status == OperationStatus.SUCCEEDED and by_node[1].detail["state"] == "sent"
    assert by_node[2].status == OperationStatus.FAILED and by_node[2].detail["state"] == "failed"
    assert "mko-none0" in by_node[2].message and by_node[2].finished_at is not None
    with factory() as session:
        states = states_for(session, settings, [1, 2])
    assert (states[1].wake_operation_id, states[1].wake_state) == (operation.id, "sent")
    assert (states[2].wake_operation_id, states[2].wake_state) == (operation.id, "failed")
