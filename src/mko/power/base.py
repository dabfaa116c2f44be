"""The power-driver interface, and the schedule every driver shares: send, re-send, verify.

Drivers implement only primitives: ``_on``, ``_off`` and ``query`` for one node (API drivers: Proxmox,
IPMI, Redfish), or a batch ``send_on`` (magic packets: many nodes in one tight loop). The schedule in
:func:`power_on` / :func:`power_off` owns everything else, so each driver gets it right once:

* nodes are grouped by driver and every group runs its rounds concurrently, so a slow API call (a
  Proxmox start task) never delays the magic packets of the same cluster wake;
* within a group every pending node is attempted in the same round (control-plane nodes first), never
  one node after another with sleeps in between; rounds repeat ``retries`` times, ``delay`` seconds apart;
* a driver whose successful call confirms delivery (``confirms_delivery``: an API accepted the request)
  is not called again for that node; magic packets, which nobody acknowledges, are re-sent;
* with ``wait`` each node is verified concurrently: by the driver's own ``query`` where it has one
  (``verify_by_query``; re-queried every ``probe_interval`` until the state is reached), else by a TCP
  probe, re-sending every ``delay`` seconds until the node answers or the timeout passes; without
  ``wait`` the result says "sent", never "up";
* a fatal error (bad settings, authentication, missing capability) stops that node at once; a retryable
  one (network unreachable, timeout) is tried again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mko.platform.errors import FatalPowerError, PowerError, RetryablePowerError, UnsupportedActionError
from mko.power.params import DriverParams, EncryptedSecret, RevealedSecret
from mko.power.probe import wait_until_up

if TYPE_CHECKING:
    from mko.platform.secrets import SecretBox
    from mko.platform.settings import Settings

__all__ = [
    "LOCAL_SITE",
    "STATUS",
    "AttemptError",
    "Capability",
    "NodeOutcome",
    "NodeSnapshot",
    "OutcomeState",
    "PowerAction",
    "PowerDriver",
    "PowerState",
    "ProxmoxEndpoint",
    "WakeSchedule",
    "attempt_error",
    "power_cycle",
    "power_off",
    "power_on",
    "power_on_levels",
]

log = logging.getLogger("mko.power")

#: The name of the "ask the power state" action (``mko node power ID status``).
STATUS = "status"


class Capability(enum.StrEnum):
    """What a driver can do; a driver declares the set, and the base and the services read it."""

    ON = "on"
    OFF = "off"  # hard: pull the plug
    SOFT_OFF = "soft-off"  # graceful (ACPI, GracefulShutdown, Proxmox shutdown)
    CYCLE = "cycle"  # off then on in one command (a PDU outlet's reboot)
    QUERY = "query"  # the driver can read the power state
    # An unacknowledged wake signal (magic packet): may be relayed by a wake agent of the node's site,
    # needs the node's NIC armed, and "up" is known only by probing the node.
    WAKE_ONLY = "wake-only"


class PowerState(enum.StrEnum):
    """A node's power as its driver reports it."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class PowerAction(enum.StrEnum):
    """What a person can ask a driver to do."""

    ON = "on"
    OFF = "off"  # hard: pull the plug (Proxmox stop, IPMI off, Redfish ForceOff)
    SOFT = "soft"  # graceful: ACPI shutdown (Proxmox shutdown then stop, IPMI soft, GracefulShutdown)
    CYCLE = "cycle"  # off, then on again (PDU outlet reboot)

    @property
    def target(self) -> PowerState:
        """The state this action ends in."""
        return PowerState.ON if self in (PowerAction.ON, PowerAction.CYCLE) else PowerState.OFF


#: The capability each action (and "status") needs.
_NEEDS = {
    PowerAction.ON.value: Capability.ON,
    PowerAction.OFF.value: Capability.OFF,
    PowerAction.SOFT.value: Capability.SOFT_OFF,
    PowerAction.CYCLE.value: Capability.CYCLE,
    STATUS: Capability.QUERY,
}


@dataclass(frozen=True)
class ProxmoxEndpoint:
    """A Proxmox host's connection settings; the secret stays encrypted until a driver uses it."""

    host_id: int
    name: str
    host: str
    port: int
    token_id: str | None
    username: str | None
    secret_encrypted: str | None = field(repr=False)
    verify_tls: bool = True
    ca_file: str | None = None
    fingerprint: str | None = None


#: A node's site that means "the orchestrator's own LAN" even when its cluster is at another site.
LOCAL_SITE = "local"


@dataclass(frozen=True)
class NodeSnapshot:
    """What a power action needs of a node, built by the inventory (drivers never see a row).

    ``params`` is the node's driver settings model, validated, secrets still encrypted; ``refs`` holds
    what the service resolved for it (``"proxmox_host"``: a :class:`ProxmoxEndpoint`). ``delegate`` is,
    for a node of a composite driver (``PowerDriver.delegate_setting``), the same node as the driver it
    is powered through sees it: that method and its settings model.
    """

    node_id: int
    hostname: str
    ip_address: str
    role: str  # the MicroK8s role's value (mko.platform.db.models.inventory.NodeRole is a StrEnum of them)
    method: str
    probe_port: int
    # The wake-agent site whose agents send this node's magic packets; None: the orchestrator itself.
    site: str | None = None
    params: DriverParams = field(default_factory=DriverParams)
    refs: Mapping[str, Any] = field(default_factory=dict)
    delegate: NodeSnapshot | None = None

    @property
    def label(self) -> str:
        """``node 3 (web-1)``, for messages."""
        return f"node {self.node_id} ({self.hostname})"


@dataclass(frozen=True)
class AttemptError:
    """Why one attempt for one node failed, and whether another attempt may help."""

    message: str
    retryable: bool


def attempt_error(exc: PowerError) -> AttemptError:
    """The AttemptError for a driver's PowerError."""
    return AttemptError(str(exc), retryable=isinstance(exc, RetryablePowerError))


@dataclass(frozen=True)
class WakeSchedule:
    """How hard to try: attempts, spacing, and optional verification."""

    retries: int = 3
    delay: float = 1.0
    wait: bool = False
    timeout: float = 300.0
    probe_interval: float = 1.0
    probe_timeout: float = 1.0
    # Spreading power-ons (inrush current): seconds between two nodes' first attempts, and at least this
    # many between two on the same device (a PDU, a plug: PowerDriver.device_key).
    stagger: float = 0.0
    device_gap: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """For an operation's parameters."""
        spread = {"stagger": self.stagger} if self.stagger else {}
        return {
            "retries": self.retries,
            "delay": self.delay,
            "wait": self.wait,
            "timeout": self.timeout,
        } | spread


class OutcomeState(enum.StrEnum):
    """Where a node ended up. ``sent`` is all that can be said without verification."""

    PENDING = "pending"
    SENT = "sent"
    UP = "up"
    NOT_UP = "not_up"
    OFF = "off"
    NOT_OFF = "not_off"
    FAILED = "failed"


@dataclass
class NodeOutcome:
    """What happened to one node during a power action."""

    node_id: int
    hostname: str
    method: str
    state: OutcomeState = OutcomeState.PENDING
    attempts: int = 0
    first_sent_after: float | None = None
    up_after: float | None = None
    error: str | None = None
    action: str = PowerAction.ON.value
    off_after: float | None = None
    verified_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for operations and API responses."""
        data = {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "method": self.method,
            "state": self.state.value,
            "attempts": self.attempts,
            "first_sent_after": _rounded(self.first_sent_after),
            "up_after": _rounded(self.up_after),
            "error": self.error,
            "verified_by": self.verified_by,
        }
        if self.action != PowerAction.ON:
            data["action"] = self.action
            data["off_after"] = _rounded(self.off_after)
        return data

    def describe(self) -> str:
        """One line for people."""
        by = f", {self.verified_by}" if self.verified_by else ""
        if self.state == OutcomeState.UP:
            return f"up after {self.up_after:.1f}s ({self.attempts} sent{by})"
        if self.state == OutcomeState.OFF:
            return f"off after {self.off_after:.1f}s ({self.attempts} sent{by})"
        if self.state == OutcomeState.SENT:
            return f"{self.attempts} sent (not verified)"
        if self.state == OutcomeState.NOT_UP:
            return f"not up before the timeout ({self.attempts} sent)"
        if self.state == OutcomeState.NOT_OFF:
            return f"still not off at the timeout ({self.attempts} sent)"
        return f"failed: {self.error}"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class PowerDriver:
    """A way of powering nodes on and, for some drivers, off and asking their state.

    A driver module declares ``name`` (the stored ``power_method``), ``Params`` (its settings model,
    :mod:`mko.power.params`) and ``capabilities``, and implements the primitives those need: ``_on``,
    ``_off``, ``_cycle`` and ``query`` for one node, raising FatalPowerError or RetryablePowerError; or
    it overrides ``send_on`` to handle a whole batch at once.
    """

    #: The registry key and the stored power method.
    name: ClassVar[str] = ""
    #: The node's settings for this driver.
    Params: ClassVar[type[DriverParams]] = DriverParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.ON})
    #: Which nodes it can power: a Proxmox VM is "virtual"; magic packets and BMCs are "physical".
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "any"
    #: A successful call means the request was accepted: the schedule does not repeat it.
    confirms_delivery: ClassVar[bool] = False
    #: With ``wait``, verify with ``query`` (the state the driver reports) instead of a TCP probe.
    verify_by_query: ClassVar[bool] = False
    #: Nodes handled at once by the default batch methods.
    parallel: ClassVar[int] = 32
    #: Human name in messages.
    label: ClassVar[str] = "power"
    #: Short name on a node's card in the web UI (the label when empty).
    badge: ClassVar[str] = ""
    #: Decrypts stored secrets; set by the registry's lookup for each run.
    secrets: Callable[[], SecretBox] | None = None
    #: A composite driver powers its nodes through another driver (a hypervisor through its BMC): the
    #: setting that names the node's method, and the methods it may name. The inventory puts the node as
    #: that driver sees it in ``NodeSnapshot.delegate``; ``peers`` hands out that driver.
    delegate_setting: ClassVar[str | None] = None
    delegates: ClassVar[tuple[str, ...]] = ()
    #: The run's drivers (one instance per driver, shared with the run's other nodes); set by the
    #: registry's lookup for each run.
    peers: DriverLookup | None = None

    @classmethod
    def create(cls, settings: Settings) -> PowerDriver:
        """A driver for one run, configured from settings."""
        return cls()

    @classmethod
    def supports(cls, action: str) -> bool:
        """Whether this driver can do ``action`` (on, off, soft, cycle, status) at all."""
        need = _NEEDS.get(action)
        return need is not None and need in cls.capabilities

    @classmethod
    def can(cls) -> list[str]:
        """The actions it offers, for messages and help."""
        return [action for action, need in _NEEDS.items() if need in cls.capabilities]

    @classmethod
    def unsupported(cls, node: NodeSnapshot, action: str) -> UnsupportedActionError:
        """The refusal for an action this driver cannot do, with the reason."""
        can = ", ".join(cls.can()) or "nothing"
        return UnsupportedActionError(
            f"{node.label} is powered by {cls.label} ({node.method}), which cannot do {action!r}"
            f" (it can: {can})"
        )

    def device_key(self, node: NodeSnapshot) -> str | None:
        """The device several nodes share (a PDU), for per-device limits; None: the node's own."""
        return None

    def reveal(self, value: str) -> str:
        """A stored secret in the clear, at the moment of use."""
        if isinstance(value, RevealedSecret):
            return str(value)
        if not isinstance(value, EncryptedSecret):
            raise FatalPowerError("a stored secret is not encrypted; set it again")
        if self.secrets is None:
            raise FatalPowerError(f"the {self.label} driver has no key to read stored secrets")
        return self.secrets().decrypt(str(value))

    def params(self, node: NodeSnapshot) -> Any:
        """The node's settings as this driver's model (the snapshot holds them validated)."""
        if isinstance(node.params, self.Params):
            return node.params
        return self.Params.model_validate(node.params.model_dump())

    async def send_on(self, nodes: Sequence[NodeSnapshot]) -> dict[int, AttemptError | None]:
        """One power-on attempt for each node, all at once; None for a node means the attempt went out."""
        return await self._each(nodes, self._on)

    async def send_off(self, nodes: Sequence[NodeSnapshot], *, soft: bool) -> dict[int, AttemptError | None]:
        """One power-off attempt (graceful with ``soft``) for each node, all at once."""

        async def off(node: NodeSnapshot) -> None:
            await self._off(node, soft=soft)

        return await self._each(nodes, off)

    async def query(self, node: NodeSnapshot) -> PowerState:
        """The node's power state as the driver sees it."""
        raise self.unsupported(node, STATUS)

    async def _on(self, node: NodeSnapshot) -> None:
        raise self.unsupported(node, PowerAction.ON.value)

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        raise self.unsupported(node, (PowerAction.SOFT if soft else PowerAction.OFF).value)

    async def _cycle(self, node: NodeSnapshot) -> None:
        raise self.unsupported(node, PowerAction.CYCLE.value)

    async def send_cycle(self, nodes: Sequence[NodeSnapshot]) -> dict[int, AttemptError | None]:
        """One off-then-on command for each node, all at once."""
        return await self._each(nodes, self._cycle)

    async def _each(
        self, nodes: Sequence[NodeSnapshot], call: Callable[[NodeSnapshot], Awaitable[None]]
    ) -> dict[int, AttemptError | None]:
        limit = asyncio.Semaphore(self.parallel)

        async def one(node: NodeSnapshot) -> AttemptError | None:
            async with limit:
                try:
                    await call(node)
                except PowerError as exc:
                    return attempt_error(exc)
                except Exception as exc:  # a driver bug must not end a whole cluster's wake
                    log.exception("%s driver failed unexpectedly for %s", self.label, node.label)
                    return AttemptError(f"unexpected {type(exc).__name__} in the {self.label} driver", False)
            return None

        results = await asyncio.gather(*(one(node) for node in nodes))
        return {node.node_id: result for node, result in zip(nodes, results, strict=True)}

    def close(self) -> None:
        """Release sockets or sessions."""

    async def aclose(self) -> None:
        """Release resources that need the event loop; by default the same as ``close``."""
        self.close()


#: The role whose nodes are powered on first (NodeRole.CONTROL_PLANE's value: drivers know no database).
CONTROL_PLANE = "control-plane"

EventHook = Callable[[str, NodeOutcome], None]
DriverLookup = Callable[[NodeSnapshot], PowerDriver | AttemptError]


def _order(nodes: Sequence[NodeSnapshot]) -> list[NodeSnapshot]:
    # Control-plane nodes first: workers cannot join until the API server and dqlite are back.
    return sorted(nodes, key=lambda n: (n.role != CONTROL_PLANE, n.node_id))


async def power_on(
    nodes: Sequence[NodeSnapshot],
    schedule: WakeSchedule,
    driver_for: DriverLookup,
    on_event: EventHook | None = None,
) -> list[NodeOutcome]:
    """Power nodes on following ``schedule``; results in control-plane-first order."""
    return await _PowerRun(nodes, schedule, driver_for, on_event, PowerAction.ON).run()


async def power_off(
    nodes: Sequence[NodeSnapshot],
    schedule: WakeSchedule,
    driver_for: DriverLookup,
    on_event: EventHook | None = None,
    *,
    soft: bool = False,
) -> list[NodeOutcome]:
    """Power nodes off (gracefully with ``soft``) following ``schedule``."""
    action = PowerAction.SOFT if soft else PowerAction.OFF
    return await _PowerRun(nodes, schedule, driver_for, on_event, action).run()


async def power_cycle(
    nodes: Sequence[NodeSnapshot],
    schedule: WakeSchedule,
    driver_for: DriverLookup,
    on_event: EventHook | None = None,
) -> list[NodeOutcome]:
    """Power nodes off and on again in one command each (a PDU outlet's reboot); verified as "on"."""
    return await _PowerRun(nodes, schedule, driver_for, on_event, PowerAction.CYCLE).run()


class _PowerRun:
    """The state of one run: outcomes per node, drivers and their groups, verification watchers."""

    def __init__(
        self,
        nodes: Sequence[NodeSnapshot],
        schedule: WakeSchedule,
        driver_for: DriverLookup,
        on_event: EventHook | None,
        action: PowerAction,
    ) -> None:
        self.schedule = schedule
        self.action = action
        self.target = action.target
        self.reached = OutcomeState.UP if self.target == PowerState.ON else OutcomeState.OFF
        self.missed = OutcomeState.NOT_UP if self.target == PowerState.ON else OutcomeState.NOT_OFF
        ordered = _order(nodes)
        self.outcomes = {
            n.node_id: NodeOutcome(n.node_id, n.hostname, n.method, action=action.value) for n in ordered
        }
        self.notify: EventHook = on_event or (lambda _kind, _outcome: None)
        self.drivers: dict[int, PowerDriver] = {}
        groups: dict[int, tuple[PowerDriver, list[NodeSnapshot]]] = {}
        for node in ordered:
            found = driver_for(node)
            if isinstance(found, AttemptError):
                _fail(self.outcomes[node.node_id], found.message, self.notify)
            elif not found.supports(action.value):
                _fail(self.outcomes[node.node_id], str(found.unsupported(node, action.value)), self.notify)
            else:
                self.drivers[node.node_id] = found
                groups.setdefault(id(found), (found, []))[1].append(node)
        self.groups = list(groups.values())
        self.offsets = self._offsets(ordered)
        self.watchers: dict[int, asyncio.Task[None]] = {}
        self.changed = asyncio.Event()
        self.started = 0.0

    def _offsets(self, ordered: Sequence[NodeSnapshot]) -> dict[int, float]:
        """When each node's first attempt may go out: ``stagger`` apart in order, and ``device_gap``
        apart on one device."""
        offsets: dict[int, float] = {}
        if not (self.schedule.stagger or self.schedule.device_gap) or self.action == PowerAction.OFF:
            return offsets
        last_on_device: dict[str, float] = {}
        for index, node in enumerate(n for n in ordered if n.node_id in self.drivers):
            offset = index * self.schedule.stagger
            device = self.drivers[node.node_id].device_key(node)
            if device is not None and device in last_on_device:
                offset = max(offset, last_on_device[device] + self.schedule.device_gap)
            if device is not None:
                last_on_device[device] = offset
            offsets[node.node_id] = offset
        return offsets

    def _finished(self, node: NodeSnapshot) -> bool:
        return self.outcomes[node.node_id].state in (self.reached, OutcomeState.FAILED)

    def _needs_attempt(self, node: NodeSnapshot) -> bool:
        if self._finished(node):
            return False
        # An API that accepted the request has it; asking again would only queue a second task.
        return not (self.drivers[node.node_id].confirms_delivery and self.outcomes[node.node_id].attempts)

    def _signal(self) -> None:
        """Wake every round loop waiting for a node to settle."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def run(self) -> list[NodeOutcome]:
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        try:
            await asyncio.gather(
                *(
                    self._rounds(loop, driver, batch, start)
                    for driver, nodes in self.groups
                    for start, batch in _by_offset(nodes, self.offsets).items()
                )
            )
            # Nodes still booting get the rest of the timeout; nodes that failed need no more probing.
            for node_id, task in self.watchers.items():
                if self.outcomes[node_id].state == OutcomeState.FAILED:
                    task.cancel()
            await asyncio.gather(*self.watchers.values(), return_exceptions=True)
        finally:
            for task in self.watchers.values():
                task.cancel()
            for driver in {id(d): d for d in self.drivers.values()}.values():
                try:
                    await driver.aclose()
                except Exception:  # closing must not hide the outcome
                    log.exception("closing the %s driver failed", driver.label)
        for outcome in self.outcomes.values():
            if outcome.state == OutcomeState.PENDING:  # every attempt failed with a retryable error
                _fail(outcome, outcome.error or "no attempt went out", self.notify)
            elif outcome.state == OutcomeState.SENT:
                outcome.state = self.missed if self.schedule.wait else OutcomeState.SENT
                self.notify(outcome.state.value, outcome)
        return list(self.outcomes.values())

    async def _rounds(
        self,
        loop: asyncio.AbstractEventLoop,
        driver: PowerDriver,
        nodes: list[NodeSnapshot],
        start: float = 0.0,
    ) -> None:
        schedule = self.schedule
        if start:
            await asyncio.sleep(max(0.0, self.started + start - loop.time()))
        started = self.started + start  # a staggered node's schedule starts at its own turn
        deadline = started + schedule.timeout
        round_number = 0
        while pending := [n for n in nodes if self._needs_attempt(n)]:
            await self._send(driver, pending, loop.time() - self.started)
            if schedule.wait:
                for node in nodes:
                    if node.node_id not in self.watchers and not self._failed(node):
                        self.watchers[node.node_id] = asyncio.create_task(self._watch(driver, node, deadline))
            round_number += 1
            if not schedule.wait and round_number >= schedule.retries:
                return
            next_round = started + _round_time(round_number, schedule)
            if schedule.wait and next_round >= deadline:
                return
            # Sleep until the next round, waking early only to stop when every node has settled.
            while (pause := next_round - loop.time()) > 0 and any(self._needs_attempt(n) for n in nodes):
                if schedule.wait:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), pause)
                else:
                    await asyncio.sleep(pause)

    def _failed(self, node: NodeSnapshot) -> bool:
        return self.outcomes[node.node_id].state == OutcomeState.FAILED

    async def _send(self, driver: PowerDriver, pending: Sequence[NodeSnapshot], elapsed: float) -> None:
        """One attempt per pending node of one driver, as one batch."""
        if self.action == PowerAction.ON:
            errors = await driver.send_on(pending)
        elif self.action == PowerAction.CYCLE:
            errors = await driver.send_cycle(pending)
        else:
            errors = await driver.send_off(pending, soft=self.action == PowerAction.SOFT)
        for node_id, error in errors.items():
            outcome = self.outcomes[node_id]
            if error is None:
                outcome.attempts += 1
                outcome.error = None
                if outcome.first_sent_after is None:
                    outcome.first_sent_after = elapsed
                if outcome.state == OutcomeState.PENDING:
                    outcome.state = OutcomeState.SENT
                self.notify("sent", outcome)
            elif not error.retryable:
                _fail(outcome, error.message, self.notify)
                self._signal()
            else:
                outcome.error = error.message

    async def _watch(self, driver: PowerDriver, node: NodeSnapshot, deadline: float) -> None:
        if driver.verify_by_query:
            reached_at = await self._query_until(driver, node, deadline)
            verified_by = "query"
        elif self.target == PowerState.ON:
            reached_at = await wait_until_up(
                node.ip_address,
                node.probe_port,
                deadline=deadline,
                interval=self.schedule.probe_interval,
                connect_timeout=self.schedule.probe_timeout,
            )
            verified_by = f"tcp/{node.probe_port}"
        else:
            return  # nothing can tell that a node without a query went off
        outcome = self.outcomes[node.node_id]
        if reached_at is not None and outcome.state != OutcomeState.FAILED:
            outcome.state = self.reached
            outcome.verified_by = verified_by
            if self.target == PowerState.ON:
                outcome.up_after = reached_at - self.started
            else:
                outcome.off_after = reached_at - self.started
            self.notify(self.reached.value, outcome)
        self._signal()

    async def _query_until(self, driver: PowerDriver, node: NodeSnapshot, deadline: float) -> float | None:
        """Re-query until the driver reports the target state; the loop time it did, or None."""
        loop = asyncio.get_running_loop()
        outcome = self.outcomes[node.node_id]
        # Most BMCs and hypervisors change state within a second: ask again soon, then back off to the
        # probe interval.
        pause = min(0.1, self.schedule.probe_interval)
        while True:
            try:
                state = await driver.query(node)
            except FatalPowerError as exc:
                if outcome.state != self.reached:
                    _fail(outcome, str(exc), self.notify)
                return None
            except RetryablePowerError as exc:
                log.info("%s: power state not readable yet: %s", node.label, exc)
                state = PowerState.UNKNOWN
            if state == self.target:
                return loop.time()
            now = loop.time()
            if now >= deadline:
                return None
            await asyncio.sleep(min(pause, deadline - now))
            pause = min(pause * 2, self.schedule.probe_interval)


def _by_offset(nodes: Sequence[NodeSnapshot], offsets: dict[int, float]) -> dict[float, list[NodeSnapshot]]:
    """Nodes grouped by when their first attempt may go out (all at 0 without staggering)."""
    batches: dict[float, list[NodeSnapshot]] = {}
    for node in nodes:
        batches.setdefault(offsets.get(node.node_id, 0.0), []).append(node)
    return batches


async def power_on_levels(
    levels: Sequence[Sequence[NodeSnapshot]],
    schedule: WakeSchedule,
    lookup_for_run: Callable[[], DriverLookup],
    on_event: EventHook | None = None,
    depends: dict[int, set[int]] | None = None,
) -> list[NodeOutcome]:
    """Power on level after level (the order of dependencies): a level starts when every node of the
    one before is verified up or has failed, so each level but the last is verified even without
    ``wait``. A node whose dependency did not come up is not powered, and says why."""
    depends = depends or {}
    outcomes: list[NodeOutcome] = []
    not_up: dict[int, str] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index, level in enumerate(levels):
        last = index == len(levels) - 1
        ready: list[NodeSnapshot] = []
        for node in level:
            blocked = sorted(d for d in depends.get(node.node_id, ()) if d in not_up)
            if blocked:
                names = ", ".join(not_up[d] for d in blocked)
                outcome = NodeOutcome(node.node_id, node.hostname, node.method)
                _fail(
                    outcome,
                    f"not powered on: it depends on {names}, which did not come up",
                    on_event or _quiet,
                )
                outcomes.append(outcome)
                not_up[node.node_id] = node.label
            else:
                ready.append(node)
        if not ready:
            continue
        run_schedule = schedule if last or schedule.wait else dataclasses.replace(schedule, wait=True)
        level_start = loop.time() - started
        done = await power_on(ready, run_schedule, lookup_for_run(), on_event)
        for outcome in done:
            # Times count from the start of the whole wake, not of this level.
            for name in ("first_sent_after", "up_after", "off_after"):
                if getattr(outcome, name) is not None:
                    setattr(outcome, name, getattr(outcome, name) + level_start)
            if outcome.state not in (OutcomeState.UP, OutcomeState.SENT):
                not_up[outcome.node_id] = f"node {outcome.node_id} ({outcome.hostname})"
        outcomes.extend(done)
    return outcomes


def _quiet(_kind: str, _outcome: NodeOutcome) -> None:
    return None


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
