"""The shared power-on schedule, driven by a scripted driver and real TCP probes on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import ClassVar

import pytest

from mko.platform.db.models.inventory import NodeRole
from mko.power.base import AttemptError, NodeSnapshot, OutcomeState, PowerDriver, WakeSchedule, power_on
from mko.power.drivers.wol import WolParams

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _node(node_id: int, role: NodeRole = NodeRole.WORKER, port: int | None = None) -> NodeSnapshot:
    return NodeSnapshot(
        node_id=node_id,
        hostname=f"n{node_id}",
        ip_address="127.0.0.1",
        role=role,
        method="ethernet",
        probe_port=port or _free_port(),
        params=WolParams(wol_mac_address=f"02:00:00:00:00:{node_id:02x}"),
    )


class ScriptedDriver(PowerDriver):
    """Answers from a script per node; can 'boot' a node (start a listener) after N attempts."""

    name: ClassVar[str] = "ethernet"

    def __init__(
        self,
        script: dict[int, list[AttemptError | None]] | None = None,
        boot_after: dict[int, int] | None = None,
    ):
        self.script = script or {}
        self.boot_after = boot_after or {}
        self.rounds: list[list[int]] = []
        self.attempts: dict[int, int] = {}
        self.servers: list[asyncio.Server] = []
        self.closed = False

    async def send_on(self, nodes: Sequence[NodeSnapshot]) -> dict[int, AttemptError | None]:
        self.rounds.append([n.node_id for n in nodes])
        result: dict[int, AttemptError | None] = {}
        for node in nodes:
            count = self.attempts.get(node.node_id, 0)
            answers = self.script.get(node.node_id, [])
            answer = answers[count] if count < len(answers) else None
            self.attempts[node.node_id] = count + 1
            result[node.node_id] = answer
            if answer is None and self.boot_after.get(node.node_id) == count + 1:
                self.servers.append(await asyncio.start_server(_close_at_once, "127.0.0.1", node.probe_port))
        return result

    def close(self) -> None:
        self.closed = True
        for server in self.servers:
            server.close()


async def _close_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def test_every_node_every_round_control_plane_first() -> None:
    driver = ScriptedDriver()
    nodes = [_node(1), _node(2, NodeRole.CONTROL_PLANE), _node(3)]
    outcomes = await power_on(nodes, WakeSchedule(retries=3, delay=0.05), lambda _n: driver)
    assert driver.rounds == [[2, 1, 3]] * 3
    assert [(o.node_id, o.state, o.attempts) for o in outcomes] == [
        (2, OutcomeState.SENT, 3),
        (1, OutcomeState.SENT, 3),
        (3, OutcomeState.SENT, 3),
    ]
    assert driver.closed


async def test_fatal_error_stops_that_node_only_and_retryable_is_retried() -> None:
    fatal = AttemptError("no such interface eth9", retryable=False)
    flaky = AttemptError("network unreachable", retryable=True)
    driver = ScriptedDriver({1: [fatal], 2: [flaky, None, None]})
    outcomes = {
        o.node_id: o
        for o in await power_on([_node(1), _node(2), _node(3)], WakeSchedule(3, 0.01), lambda _n: driver)
    }
    assert outcomes[1].state == OutcomeState.FAILED and outcomes[1].error == "no such interface eth9"
    assert outcomes[1].attempts == 0 and driver.attempts[1] == 1
    assert outcomes[2].state == OutcomeState.SENT and outcomes[2].attempts == 2
    assert outcomes[3].attempts == 3


async def test_only_retryable_failures_end_failed_with_the_last_reason() -> None:
    flaky = AttemptError("network unreachable", retryable=True)
    driver = ScriptedDriver({1: [flaky, flaky]})
    [outcome] = await power_on([_node(1)], WakeSchedule(2, 0.01), lambda _n: driver)
    assert outcome.state == OutcomeState.FAILED and outcome.error == "network unreachable"


async def test_missing_driver_is_an_honest_failure() -> None:
    missing = AttemptError("no Proxmox driver", retryable=False)
    driver = ScriptedDriver()
    outcomes = await power_on(
        [_node(1), _node(2)], WakeSchedule(1, 0), lambda n: missing if n.node_id == 1 else driver
    )
    assert [(o.node_id, o.state, o.error) for o in outcomes] == [
        (1, OutcomeState.FAILED, "no Proxmox driver"),
        (2, OutcomeState.SENT, None),
    ]


async def test_wait_reports_up_only_after_boot_and_stops_resending() -> None:
    driver = ScriptedDriver(boot_after={1: 2})
    schedule = WakeSchedule(
        retries=3, delay=0.1, wait=True, timeout=5, probe_interval=0.05, probe_timeout=0.5
    )
    events: list[tuple[str, int]] = []
    [outcome] = await power_on(
        [_node(1)], schedule, lambda _n: driver, lambda kind, o: events.append((kind, o.node_id))
    )
    assert outcome.state == OutcomeState.UP
    assert outcome.attempts == 2  # booted after the second packet; no third was needed
    assert outcome.up_after is not None and outcome.up_after >= 0.1  # not before the second packet went out
    assert events == [("sent", 1), ("sent", 1), ("up", 1)]


async def test_node_that_never_comes_up_is_not_up_after_timeout_with_resend_count() -> None:
    driver = ScriptedDriver(boot_after={1: 1})
    schedule = WakeSchedule(
        retries=2, delay=0.05, wait=True, timeout=0.6, probe_interval=0.1, probe_timeout=0.2
    )
    outcomes = {o.node_id: o for o in await power_on([_node(1), _node(2)], schedule, lambda _n: driver)}
    assert outcomes[1].state == OutcomeState.UP
    never = outcomes[2]
    assert never.state == OutcomeState.NOT_UP
    # Re-sent through the whole timeout: 2 rounds 0.05 s apart, then every probe interval (0.1 s).
    assert 4 <= never.attempts <= 7
    assert "not up before the timeout" in never.describe()
