"""The driver base owns retry and verification: a scripted API driver (on/off/query primitives)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

import pytest

from mko.platform.db.models.inventory import NodeRole
from mko.platform.errors import FatalPowerError, RetryablePowerError
from mko.power.base import (
    AttemptError,
    Capability,
    NodeSnapshot,
    OutcomeState,
    PowerDriver,
    PowerState,
    WakeSchedule,
    power_off,
    power_on,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _node(node_id: int, method: str = "ipmi") -> NodeSnapshot:
    return NodeSnapshot(
        node_id=node_id,
        hostname=f"n{node_id}",
        ip_address="127.0.0.1",
        role=NodeRole.WORKER,
        method=method,
        probe_port=9,
    )


def _waiting(timeout: float = 2.0) -> WakeSchedule:
    return WakeSchedule(retries=3, delay=0.01, wait=True, timeout=timeout, probe_interval=0.01)


class ScriptedApi(PowerDriver):
    """An API driver: calls answer from a script (an exception or None); power follows accepted calls."""

    name: ClassVar[str] = "ipmi"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.SOFT_OFF, Capability.QUERY}
    )
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True

    def __init__(
        self,
        calls: list[Exception | None] | None = None,
        *,
        sticks: bool = True,
        queries: list[Exception | None] | None = None,
        lag: int = 0,
    ) -> None:
        self.calls = list(calls or [])
        self.sticks = sticks  # False: the BMC accepts the call but the power never changes
        self.query_script = list(queries or [])
        self.lag = lag  # queries that still show the old state after an accepted call
        self.state = {1: PowerState.OFF, 2: PowerState.OFF}
        self.log: list[str] = []
        self.closed = False

    def _answer(self, what: str, node: NodeSnapshot, new: PowerState) -> None:
        self.log.append(f"{what} {node.node_id}")
        answer = self.calls.pop(0) if self.calls else None
        if answer is not None:
            raise answer
        if self.sticks:
            self.state[node.node_id] = new

    async def _on(self, node: NodeSnapshot) -> None:
        self._answer("on", node, PowerState.ON)

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        self._answer("soft" if soft else "off", node, PowerState.OFF)

    async def query(self, node: NodeSnapshot) -> PowerState:
        self.log.append(f"query {node.node_id}")
        answer = self.query_script.pop(0) if self.query_script else None
        if answer is not None:
            raise answer
        if self.lag:
            self.lag -= 1
            return PowerState.UNKNOWN
        return self.state[node.node_id]

    def close(self) -> None:
        self.closed = True


async def test_fails_twice_then_succeeds_and_is_verified_by_query() -> None:
    timeout = RetryablePowerError("BMC did not answer")
    driver = ScriptedApi([timeout, timeout, None], lag=2)
    [outcome] = await power_on([_node(1)], _waiting(), lambda _n: driver)
    assert outcome.state == OutcomeState.UP and outcome.verified_by == "query"
    assert driver.log.count("on 1") == 3  # two retryable failures, then accepted
    assert outcome.attempts == 1 and outcome.error is None
    # Re-queried until the state was reached (the first queries still saw the old state).
    assert driver.log.count("query 1") >= 3 and driver.log[-1] == "query 1"
    assert driver.closed


async def test_accepted_call_is_not_repeated_even_with_more_retries() -> None:
    driver = ScriptedApi()
    [outcome] = await power_on([_node(1)], WakeSchedule(retries=5, delay=0.01), lambda _n: driver)
    assert driver.log == ["on 1"]
    assert outcome.state == OutcomeState.SENT and "not verified" in outcome.describe()


async def test_never_reaches_the_state() -> None:
    driver = ScriptedApi(sticks=False)
    [outcome] = await power_on([_node(1)], _waiting(timeout=0.3), lambda _n: driver)
    assert outcome.state == OutcomeState.NOT_UP
    assert driver.log.count("on 1") == 1  # accepted once; verification, not repetition, decides
    assert driver.log.count("query 1") >= 3
    assert "not up before the timeout" in outcome.describe()


async def test_fatal_error_stops_at_once_and_spares_the_other_node() -> None:
    driver = ScriptedApi([FatalPowerError("BMC refused the login: Incorrect password")])
    outcomes = {o.node_id: o for o in await power_on([_node(1), _node(2)], _waiting(), lambda _n: driver)}
    assert outcomes[1].state == OutcomeState.FAILED
    assert outcomes[1].error == "BMC refused the login: Incorrect password"
    assert driver.log.count("on 1") == 1 and "query 1" not in driver.log
    assert outcomes[2].state == OutcomeState.UP


async def test_retryable_failures_until_the_retries_run_out() -> None:
    flaky = RetryablePowerError("unreachable")
    driver = ScriptedApi([flaky, flaky, flaky])
    [outcome] = await power_on([_node(1)], WakeSchedule(retries=3, delay=0.01), lambda _n: driver)
    assert outcome.state == OutcomeState.FAILED and outcome.error == "unreachable"
    assert driver.log == ["on 1"] * 3


async def test_soft_off_is_verified_by_query() -> None:
    driver = ScriptedApi(lag=1)
    driver.state[1] = PowerState.ON
    [outcome] = await power_off([_node(1)], _waiting(), lambda _n: driver, soft=True)
    assert outcome.state == OutcomeState.OFF and outcome.off_after is not None
    assert driver.log[0] == "soft 1"
    assert outcome.as_dict()["action"] == "soft"


async def test_query_errors_retryable_keep_polling_fatal_stops() -> None:
    driver = ScriptedApi(queries=[RetryablePowerError("busy"), None])
    [ok] = await power_on([_node(1)], _waiting(), lambda _n: driver)
    assert ok.state == OutcomeState.UP
    driver = ScriptedApi(queries=[FatalPowerError("token revoked")])
    [failed] = await power_on([_node(1)], _waiting(), lambda _n: driver)
    assert failed.state == OutcomeState.FAILED and failed.error == "token revoked"


async def test_unsupported_action_is_refused_with_the_reason() -> None:
    class OnlyOn(PowerDriver):
        name: ClassVar[str] = "ethernet"
        label: ClassVar[str] = "magic packets"

        async def send_on(self, nodes: Sequence[NodeSnapshot]) -> dict[int, AttemptError | None]:
            return dict.fromkeys((n.node_id for n in nodes), None)

    [outcome] = await power_off([_node(1, "ethernet")], _waiting(), lambda _n: OnlyOn())
    assert outcome.state == OutcomeState.FAILED
    assert "cannot do 'off'" in (outcome.error or "") and "it can: on" in (outcome.error or "")


async def test_a_slow_api_does_not_hold_back_magic_packets_of_the_same_wake() -> None:
    events: list[str] = []
    api_may_finish = asyncio.Event()

    class SlowApi(ScriptedApi):
        async def _on(self, node: NodeSnapshot) -> None:
            await api_may_finish.wait()
            events.append("api accepted")

    class Packets(PowerDriver):
        name: ClassVar[str] = "ethernet"

        async def send_on(self, nodes: Sequence[NodeSnapshot]) -> dict[int, AttemptError | None]:
            events.append("packet")
            if events.count("packet") == 3:
                api_may_finish.set()
            return dict.fromkeys((n.node_id for n in nodes), None)

    slow, packets = SlowApi(), Packets()
    nodes = [_node(1), _node(2, "ethernet")]
    outcomes = await power_on(
        nodes, WakeSchedule(retries=3, delay=0.01), lambda n: packets if n.node_id == 2 else slow
    )
    # All three packet rounds went out while the API call was still waiting.
    assert events == ["packet", "packet", "packet", "api accepted"]
    assert [o.state for o in outcomes] == [OutcomeState.SENT, OutcomeState.SENT]
