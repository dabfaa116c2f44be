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
from sqlalchemy.orm import Session

from mko.inventory.nodes import list_nodes
from mko.inventory.snapshots import node_rows, snapshots
from mko.operations.records import Actor
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.wol.wake import make_schedule, run_wake, start_wake


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    """A UDP socket on loopback that receives what is sent to 127.255.255.255:<its port>."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    yield sock
    sock.close()


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


def test_the_one_query_snapshots_are_the_ones_the_orm_builds(
    client: TestClient, session: Session, receiver: socket.socket
) -> None:
    cluster_id = _cluster(client, receiver.getsockname()[1], 5)
    rows = node_rows(session, cluster_id=cluster_id)
    assert [r.hostname for r in rows] == [f"n{i}" for i in range(1, 6)]
    assert snapshots(session, rows) == snapshots(session, list_nodes(session, cluster_id))


def test_a_cluster_wakes_first_packet_leaves_before_its_steps_are_written(
    client: TestClient, settings: Settings, receiver: socket.socket
) -> None:
    cluster_id = _cluster(client, receiver.getsockname()[1], 6)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    seen: list[bool] = []

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO OPERATION_STEPS"):
            readable, _, _ = select.select([receiver], [], [], 0)
            seen.append(bool(readable))  # a magic packet already waits in the receiver's queue

    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        with factory() as session:
            prepared = start_wake(
                session,
                target_type="cluster",
                target_id=cluster_id,
                schedule=make_schedule(settings, retries=1, delay=0),
                actor=Actor("cli:test", "local"),
            )
        assert seen == []  # the operation is recorded, its steps are not yet
        operation = asyncio.run(run_wake(factory, settings, prepared))
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
    assert seen == [True]  # one INSERT of every step, after the first packet
    assert operation.status == OperationStatus.PARTIAL  # n3 skipped
    by_node = {step.node_id: step for step in operation.steps}
    assert sorted(by_node) == [1, 2, 3, 4, 5, 6]
    assert by_node[3].status == OperationStatus.CANCELLED and "disabled" in by_node[3].message
    assert all(by_node[i].status == OperationStatus.SUCCEEDED for i in (1, 2, 4, 5, 6))
    engine.dispose()


def test_a_wake_cancelled_before_its_steps_were_written_still_records_them(
    client: TestClient, settings: Settings, receiver: socket.socket
) -> None:
    cluster_id = _cluster(client, receiver.getsockname()[1], 4)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    with factory() as session:
        prepared = start_wake(
            session,
            target_type="cluster",
            target_id=cluster_id,
            schedule=make_schedule(settings, retries=3, delay=30),
            actor=Actor("cli:test", "local"),
        )

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
    engine.dispose()
