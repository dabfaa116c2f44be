"""The power-driver interface, and the schedule every driver shares: send, re-send, verify.

Drivers implement only the primitive (``send_on``: one attempt per node, many nodes at once). The
schedule in :func:`power_on` owns everything else, so each driver gets it right once:

* every node is attempted in the same round (control-plane nodes first within the round), never one
  node after another with sleeps in between;
* rounds repeat ``retries`` times, ``delay`` seconds apart;
* with ``wait``, each node is probed concurrently (TCP connect) and re-sent to every ``delay`` seconds
  until it answers or the timeout passes; without it the result says "sent", never "up";
* a fatal error (bad settings, permissions, missing capability) stops that node at once; a retryable
  one (network unreachable, timeout) is tried again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mko.db.models import Node, NodeRole, WolMethod
from mko.probe import wait_until_up

__all__ = [
    "AttemptError",
    "NodeOutcome",
    "NodeSnapshot",
    "OutcomeState",
    "PowerDriver",
    "WakeSchedule",
    "power_on",
]


@dataclass(frozen=True)
class NodeSnapshot:
    """The fields of a node a power action needs, detached from the database session."""

    node_id: int
    hostname: str
    ip_address: str
    role: NodeRole
    method: WolMethod
    probe_port: int
    mac: str | None = None
    wol_port: int = 9
    broadcast: str | None = None
    prefix_len: int | None = None
    interface: str | None = None
    secureon: str | None = field(default=None, repr=False)
    proxmox_vm_id: int | None = None
    proxmox_host_id: int | None = None

    @classmethod
    def of(cls, node: Node) -> NodeSnapshot:
        """Snapshot a Node row."""
        return cls(
            node_id=node.id,
            hostname=node.hostname,
            ip_address=node.ip_address,
            role=node.role,
            method=node.wol_method,
            probe_port=node.probe_port or node.ssh_port,
            mac=node.wol_mac_address,
            wol_port=node.wol_port,
            broadcast=node.wol_broadcast_address,
            prefix_len=node.wol_prefix_len,
            interface=node.wol_interface,
            secureon=node.wol_secureon,
            proxmox_vm_id=node.proxmox_vm_id,
            proxmox_host_id=node.proxmox_host_id,
        )


@dataclass(frozen=True)
class AttemptError:
    """Why one attempt for one node failed, and whether another attempt may help."""

    message: str
    retryable: bool


@dataclass(frozen=True)
class WakeSchedule:
    """How hard to try: attempts, spacing, and optional verification."""

    retries: int = 3
    delay: float = 1.0
    wait: bool = False
    timeout: float = 300.0
    probe_interval: float = 1.0
    probe_timeout: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        """For an operation's parameters."""
        return {"retries": self.retries, "delay": self.delay, "wait": self.wait, "timeout": self.timeout}


class OutcomeState(enum.StrEnum):
    """Where a node ended up. ``sent`` is all that can be said without verification."""

    PENDING = "pending"
    SENT = "sent"
    UP = "up"
    NOT_UP = "not_up"
    FAILED = "failed"


@dataclass
class NodeOutcome:
    """What happened to one node during a power-on."""

    node_id: int
    hostname: str
    method: str
    state: OutcomeState = OutcomeState.PENDING
    attempts: int = 0
    first_sent_after: float | None = None
    up_after: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for operations and API responses."""
        return {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "method": self.method,
            "state": self.state.value,
            "attempts": self.attempts,
            "first_sent_after": _rounded(self.first_sent_after),
            "up_after": _rounded(self.up_after),
            "error": self.error,
        }

    def describe(self) -> str:
        """One line for people."""
        if self.state == OutcomeState.UP:
            return f"up after {self.up_after:.1f}s ({self.attempts} sent)"
        if self.state == OutcomeState.SENT:
            return f"{self.attempts} sent (not verified)"
        if self.state == OutcomeState.NOT_UP:
            return f"not up before the timeout ({self.attempts} sent)"
        return f"failed: {self.error}"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class PowerDriver(ABC):
    """A way of powering nodes on (and, for some drivers, off and querying)."""

    methods: ClassVar[tuple[WolMethod, ...]]
    actions: ClassVar[frozenset[str]] = frozenset({"on"})

    @abstractmethod
    async def send_on(self, nodes: Sequence[NodeSnapshot]) -> dict[int, AttemptError | None]:
        """One power-on attempt for each node, all at once; None for a node means the attempt went out."""

    def close(self) -> None:  # noqa: B027 - optional hook, most drivers hold nothing
        """Release sockets or sessions."""


EventHook = Callable[[str, NodeOutcome], None]
DriverLookup = Callable[[NodeSnapshot], PowerDriver | AttemptError]


def _order(nodes: Sequence[NodeSnapshot]) -> list[NodeSnapshot]:
    # Control-plane nodes first: workers cannot join until the API server and dqlite are back.
    return sorted(nodes, key=lambda n: (n.role != NodeRole.CONTROL_PLANE, n.node_id))


async def power_on(
    nodes: Sequence[NodeSnapshot],
    schedule: WakeSchedule,
    driver_for: DriverLookup,
    on_event: EventHook | None = None,
) -> list[NodeOutcome]:
    """Power nodes on following ``schedule``; results in control-plane-first order."""
    return await _PowerOn(nodes, schedule, driver_for, on_event).run()


class _PowerOn:
    """The state of one power-on run: outcomes per node, drivers, probe watchers."""

    def __init__(
        self,
        nodes: Sequence[NodeSnapshot],
        schedule: WakeSchedule,
        driver_for: DriverLookup,
        on_event: EventHook | None,
    ) -> None:
        self.schedule = schedule
        self.ordered = _order(nodes)
        self.outcomes = {n.node_id: NodeOutcome(n.node_id, n.hostname, n.method.value) for n in self.ordered}
        self.notify: EventHook = on_event or (lambda _kind, _outcome: None)
        self.drivers: dict[int, PowerDriver] = {}
        for node in self.ordered:
            found = driver_for(node)
            if isinstance(found, AttemptError):
                _fail(self.outcomes[node.node_id], found.message, self.notify)
            else:
                self.drivers[node.node_id] = found
        self.active = [n for n in self.ordered if n.node_id in self.drivers]
        self.settled = asyncio.Event()
        self.watchers: dict[int, asyncio.Task[None]] = {}
        self.started = 0.0

    def _finished(self, node: NodeSnapshot) -> bool:
        return self.outcomes[node.node_id].state in (OutcomeState.UP, OutcomeState.FAILED)

    async def run(self) -> list[NodeOutcome]:
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        try:
            await self._rounds(loop)
            # Nodes still booting get the rest of the timeout; nodes that failed need no more probing.
            for node_id, task in self.watchers.items():
                if self.outcomes[node_id].state == OutcomeState.FAILED:
                    task.cancel()
            await asyncio.gather(*self.watchers.values(), return_exceptions=True)
        finally:
            for task in self.watchers.values():
                task.cancel()
            for driver in {id(d): d for d in self.drivers.values()}.values():
                driver.close()
        for outcome in self.outcomes.values():
            if outcome.state == OutcomeState.PENDING:  # every attempt failed with a retryable error
                _fail(outcome, outcome.error or "no attempt went out", self.notify)
            elif outcome.state == OutcomeState.SENT:
                outcome.state = OutcomeState.NOT_UP if self.schedule.wait else OutcomeState.SENT
                self.notify(outcome.state.value, outcome)
        return list(self.outcomes.values())

    async def _rounds(self, loop: asyncio.AbstractEventLoop) -> None:
        schedule = self.schedule
        deadline = self.started + schedule.timeout
        round_number = 0
        while pending := [n for n in self.active if not self._finished(n)]:
            await _send_round(pending, self.drivers, self.outcomes, loop.time() - self.started, self.notify)
            if schedule.wait and not self.watchers:
                self.watchers = {
                    n.node_id: asyncio.create_task(self._watch(n, deadline)) for n in self.active
                }
            round_number += 1
            if not schedule.wait and round_number >= schedule.retries:
                return
            next_round = self.started + _round_time(round_number, schedule)
            if schedule.wait and next_round >= deadline:
                return
            pause = next_round - loop.time()
            if pause <= 0:
                continue
            if schedule.wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.settled.wait(), pause)
            else:
                await asyncio.sleep(pause)

    async def _watch(self, node: NodeSnapshot, deadline: float) -> None:
        up_at = await wait_until_up(
            node.ip_address,
            node.probe_port,
            deadline=deadline,
            interval=self.schedule.probe_interval,
            connect_timeout=self.schedule.probe_timeout,
        )
        outcome = self.outcomes[node.node_id]
        if up_at is not None and outcome.state != OutcomeState.FAILED:
            outcome.state = OutcomeState.UP
            outcome.up_after = up_at - self.started
            self.notify("up", outcome)
        if all(self._finished(n) for n in self.active):
            self.settled.set()


def _fail(outcome: NodeOutcome, message: str, notify: EventHook) -> None:
    outcome.state = OutcomeState.FAILED
    outcome.error = message
    notify("failed", outcome)


def _round_time(round_number: int, schedule: WakeSchedule) -> float:
    """Offset of a round from the start: ``delay`` apart up to ``retries``; a waiting wake then keeps
    re-sending, but never faster than it probes."""
    if round_number < schedule.retries:
        return round_number * schedule.delay
    spacing = max(schedule.delay, schedule.probe_interval)
    return (schedule.retries - 1) * schedule.delay + (round_number - schedule.retries + 1) * spacing


async def _send_round(
    pending: Sequence[NodeSnapshot],
    drivers: dict[int, PowerDriver],
    outcomes: dict[int, NodeOutcome],
    elapsed: float,
    notify: EventHook,
) -> None:
    """One attempt per pending node, grouped by driver so each driver sends its batch at once."""
    by_driver: dict[int, tuple[PowerDriver, list[NodeSnapshot]]] = {}
    for node in pending:
        driver = drivers[node.node_id]
        by_driver.setdefault(id(driver), (driver, []))[1].append(node)
    batches = [driver.send_on(batch) for driver, batch in by_driver.values()]
    for errors in await asyncio.gather(*batches):
        for node_id, error in errors.items():
            outcome = outcomes[node_id]
            if error is None:
                outcome.attempts += 1
                outcome.error = None
                if outcome.first_sent_after is None:
                    outcome.first_sent_after = elapsed
                if outcome.state == OutcomeState.PENDING:
                    outcome.state = OutcomeState.SENT
                notify("sent", outcome)
            elif not error.retryable:
                _fail(outcome, error.message, notify)
            else:
                outcome.error = error.message
