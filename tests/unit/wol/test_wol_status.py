"""``GET /api/nodes/{id}/wol/status`` (and ``mko wol status``, the node page): one query, the same answer.

The status reads the node, its cluster's site and its last wake with its operation's owner in one core
query (no ORM objects). These tests hold the answer to what it was when it was built from the ORM, byte
for byte where the API serializes it, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform.db.models.inventory import Cluster, Node, ProxmoxHost
from mko.platform.db.models.operations import OperationStatus
from mko.platform.db.session import make_engine, make_read_session_factory, make_session_factory
from mko.platform.errors import NotFoundError
from mko.wol.status import wol_status_sync

AT = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
NO_NIC = {
    "interface": None,
    "supports_wake_on": None,
    "wake_on": None,
    "magic_packet_capable": None,
    "armed": None,
    "persistence": None,
    "checked_at": None,
    "interfaces_collected_at": None,
}


def _status(node_id: int, hostname: str, **changes: Any) -> dict[str, Any]:
    """A status as the API answers it for a plain node, with ``changes``."""
    return {
        "node_id": node_id,
        "hostname": hostname,
        "configured": False,
        "enabled": False,
        "wakeable": False,
        "method": "ethernet",
        "mac_address": None,
        "broadcast_address": "255.255.255.255",
        "broadcast_configured": None,
        "port": 9,
        "interface": None,
        "site": None,
        "secureon_set": False,
        "is_virtual_node": False,
        "proxmox_vm_id": None,
        "proxmox_host_id": None,
        "driver_available": True,
        "nic": NO_NIC,
        "last_wake": None,
        "reachable": None,
    } | changes


def _inventory(session: Session) -> dict[str, dict[str, Any]]:
    """Nodes of every kind the status tells apart, and what their status must be."""
    session.add(ProxmoxHost(name="pve", host="10.0.0.2"))
    far = Cluster(name="far", site="b")
    session.add(far)
    session.flush()
    nodes = {
        "eth": Node(
            hostname="eth",
            ip_address="10.0.0.2",
            wol_enabled=True,
            wol_mac_address="02:00:00:00:00:02",
            wol_broadcast_address="10.0.0.255",
            wol_port=7,
            power_params={"wol_secureon": {"fernet": "x"}},
        ),
        "prefix": Node(
            hostname="prefix",
            ip_address="10.1.2.3",
            wol_enabled=True,
            wol_mac_address="02:00:00:00:00:03",
            power_params={"wol_prefix_len": 20},
        ),
        "raw": Node(
            hostname="raw",
            ip_address="10.0.0.4",
            wol_method="ethernet-raw",
            wol_mac_address="02:00:00:00:00:04",
            power_params={"wol_interface": "eth1"},
        ),
        "vm": Node(
            hostname="vm",
            ip_address="10.0.0.6",
            wol_method="proxmox",
            is_virtual_node=True,
            proxmox_vm_id=101,
            proxmox_host_id=1,
            wol_enabled=True,
        ),
        "ipmi": Node(hostname="ipmi", ip_address="10.0.0.8", wol_method="ipmi", wol_enabled=True),
        "far": Node(
            hostname="far",
            ip_address="10.0.0.11",
            cluster_id=far.id,
            wol_enabled=True,
            wol_mac_address="02:00:00:00:00:11",
        ),
        "nic": Node(
            hostname="nic",
            ip_address="10.0.0.14",
            nic_interface="eno1",
            nic_wol_supported="pumbg",
            nic_wol_state="d",
            nic_wol_persistence="systemd-link",
            nic_checked_at=AT,
            nic_collected_at=AT,
        ),
        # A method no driver has any more (a driver taken out of a later version): still a status.
        "gone": Node(hostname="gone", ip_address="10.0.0.10", wol_method="retired", wol_enabled=True),
    }
    session.add_all(nodes.values())
    session.commit()
    actor = Actor("cli:t", "local")
    eth = nodes["eth"].id
    wake = start_operation(session, kind="wol_wake_node", target_type="node", target_id=eth, actor=actor)
    step = record_step(
        session, wake, node_id=eth, name="wake", status=OperationStatus.SUCCEEDED, detail={"state": "up"}
    )
    step.started_at = step.finished_at = AT
    finish_operation(session, wake, status=OperationStatus.SUCCEEDED, summary="ok")
    # A newer step of another kind of operation is not a wake.
    power = start_operation(session, kind="power_on", target_type="node", target_id=eth, actor=actor)
    record_step(session, power, node_id=eth, name="on", status=OperationStatus.FAILED)
    prefix = nodes["prefix"].id
    running = start_operation(
        session, kind="wol_wake_cluster", target_type="cluster", target_id=None, actor=actor
    )
    step = record_step(session, running, node_id=prefix, name="wake", status=OperationStatus.RUNNING)
    step.started_at = AT  # owned by this process, which runs: still running
    session.commit()
    ids = {name: node.id for name, node in nodes.items()}
    return {
        "eth": _status(
            ids["eth"],
            "eth",
            configured=True,
            enabled=True,
            wakeable=True,
            mac_address="02:00:00:00:00:02",
            broadcast_address="10.0.0.255",
            broadcast_configured="10.0.0.255",
            port=7,
            secureon_set=True,
            last_wake={
                "operation_id": wake.id,
                "at": AT,
                "status": "succeeded",
                "message": "",
                "state": "up",
            },
        ),
        "prefix": _status(
            ids["prefix"],
            "prefix",
            configured=True,
            enabled=True,
            wakeable=True,
            mac_address="02:00:00:00:00:03",
            broadcast_address="10.1.15.255",
            last_wake={
                "operation_id": running.id,
                "at": AT,
                "status": "running",
                "message": "",
                "state": None,
            },
        ),
        "raw": _status(
            ids["raw"],
            "raw",
            configured=True,
            method="ethernet-raw",
            mac_address="02:00:00:00:00:04",
            interface="eth1",
        ),
        "vm": _status(
            ids["vm"],
            "vm",
            configured=True,
            enabled=True,
            wakeable=True,
            method="proxmox",
            broadcast_address=None,
            is_virtual_node=True,
            proxmox_vm_id=101,
            proxmox_host_id=1,
        ),
        "ipmi": _status(ids["ipmi"], "ipmi", enabled=True, method="ipmi", broadcast_address=None),
        "far": _status(
            ids["far"],
            "far",
            configured=True,
            enabled=True,
            wakeable=True,
            mac_address="02:00:00:00:00:11",
            site="b",  # its cluster's site: the site's agents send its packets
        ),
        "nic": _status(
            ids["nic"],
            "nic",
            nic={
                "interface": "eno1",
                "supports_wake_on": "pumbg",
                "wake_on": "d",
                "magic_packet_capable": True,
                "armed": False,
                "persistence": "systemd-link",
                "checked_at": AT,
                "interfaces_collected_at": AT,
            },
        ),
        "gone": _status(
            ids["gone"],
            "gone",
            enabled=True,
            method="retired",
            broadcast_address=None,
            driver_available=False,
        ),
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, session: Session) -> Iterator[Engine]:
    """The test's migrated SQLite database, or a new PostgreSQL one."""
    if request.param == "sqlite":
        yield session.get_bind().engine
        return
    engine = make_engine(request.getfixturevalue("pg_url"))
    yield engine
    engine.dispose()


def test_every_kind_of_node_in_one_query(engine: Engine) -> None:
    with make_session_factory(engine)() as writer:
        expected = _inventory(writer)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        with make_read_session_factory(engine)() as reader:
            answers = {name: wol_status_sync(reader, status["node_id"]) for name, status in expected.items()}
            with pytest.raises(NotFoundError):
                wol_status_sync(reader, 9999)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert answers == expected
    assert len(statements) == len(expected) + 1  # one query a status (the last for the unknown node)


def test_the_api_answer_is_byte_for_byte_the_seed_endpoints(client: TestClient, session: Session) -> None:
    expected = _inventory(session)
    eth = expected["eth"]
    answer = client.get(f"/api/nodes/{eth['node_id']}/wol/status")
    assert answer.status_code == 200
    operation_id = eth["last_wake"]["operation_id"]
    expected_bytes = (
        f'{{"node_id":{eth["node_id"]},"hostname":"eth","configured":true,"enabled":true,"wakeable":true,'
        '"method":"ethernet","mac_address":"02:00:00:00:00:02","broadcast_address":"10.0.0.255",'
        '"broadcast_configured":"10.0.0.255","port":7,"interface":null,"site":null,"secureon_set":true,'
        '"is_virtual_node":false,"proxmox_vm_id":null,"proxmox_host_id":null,"driver_available":true,'
        '"nic":{"interface":null,"supports_wake_on":null,"wake_on":null,"magic_packet_capable":null,'
        '"armed":null,"persistence":null,"checked_at":null,"interfaces_collected_at":null},'
        f'"last_wake":{{"operation_id":{operation_id},"at":"2026-03-04T05:06:07.123456Z",'
        '"status":"succeeded","message":"","state":"up"},"reachable":null}'
    ).encode()
    assert answer.content == expected_bytes
    assert answer.headers["content-type"] == "application/json"
    gone = client.get(f"/api/nodes/{expected['gone']['node_id']}/wol/status")
    assert gone.status_code == 200 and gone.json()["driver_available"] is False  # was a 500
    missing = client.get("/api/nodes/9999/wol/status")
    assert missing.status_code == 404 and missing.content == b'{"detail":"node 9999 not found"}'
