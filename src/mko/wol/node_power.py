"""Power actions on one node (on, off, soft) and its power status, with whichever driver the node has.

Like a wake, an action is split in two so adapters choose how to wait: :func:`start_power` checks the
request and records the operation; :func:`run_power` carries it out through the shared schedule of
``mko.power.base`` (retries for retryable errors, verification by the driver's own query) and closes
the operation. An action the node's driver cannot do is refused before anything is recorded, with the
reason (UnsupportedActionError: HTTP 409, CLI exit 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from mko.agents.routing import routed_to_agent
from mko.inventory.nodes import get_node
from mko.inventory.snapshots import snapshot as snapshot_of
from mko.operations.kinds import POWER_KIND_PREFIX
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.session import in_thread_session
from mko.platform.errors import InputError, UnsupportedActionError
from mko.platform.settings import Settings
from mko.power.base import (
    STATUS,
    NodeOutcome,
    NodeSnapshot,
    OutcomeState,
    PowerAction,
    PowerDriver,
    PowerState,
    WakeSchedule,
    power_cycle,
    power_off,
    power_on,
)
from mko.power.registry import DRIVERS

__all__ = [
    "ACTIONS",
    "PowerTarget",
    "PreparedPower",
    "describe_power",
    "power_status",
    "power_target",
    "read_power",
    "run_power",
    "start_power",
]


ACTIONS = tuple(a.value for a in PowerAction)


@dataclass
class PreparedPower:
    """A checked power action and its running operation."""

    operation_id: int
    node: NodeSnapshot
    action: PowerAction
    schedule: WakeSchedule


def _action(value: str) -> PowerAction:
    try:
        return PowerAction(value)
    except ValueError:
        raise InputError("action", f"{value!r} is not one of {', '.join(ACTIONS)}") from None


def start_power(
    session: Session,
    settings: Settings,
    node_id: int,
    action: str,
    *,
    actor: Actor,
    wait: bool | None = None,
    timeout: float | None = None,
) -> PreparedPower:
    """Check a power action and record its operation.

    ``wait`` defaults to verifying where the driver can ask the node's power state (Proxmox, IPMI,
    Redfish) and to "sent" for magic packets, which only a booted node can confirm.
    """
    chosen = _action(action)
    node = get_node(session, node_id)
    snapshot = snapshot_of(node)
    cls = DRIVERS.get(node.wol_method)
    if cls is None:
        raise UnsupportedActionError(f"{snapshot.label}: no power driver for method {node.wol_method!r}")
    if not cls.supports(chosen.value):
        raise cls.unsupported(snapshot, chosen.value)
    if routed_to_agent(snapshot):
        # Packets sent from here would never reach the node's LAN; its site's agent sends them.
        raise UnsupportedActionError(
            f"{snapshot.label} is at site {snapshot.site}: its magic packets are sent by that site's"
            f" agent; wake it with `mko wol wake-node {node_id}`"
        )
    timeout = settings.power_timeout if timeout is None else timeout
    if not 0 < timeout <= 3600:
        raise InputError("timeout", f"{timeout} is out of range (0-3600 seconds)")
    schedule = WakeSchedule(
        retries=settings.wol_default_retries,
        delay=settings.wol_default_delay,
        wait=cls.verify_by_query if wait is None else wait,
        timeout=timeout,
        probe_interval=settings.probe_interval,
        probe_timeout=settings.probe_timeout,
    )
    operation = start_operation(
        session,
        kind=f"{POWER_KIND_PREFIX}_{chosen.value}",
        target_type="node",
        target_id=node_id,
        actor=actor,
        parameters={"action": chosen.value, **schedule.as_dict()},
        summary=f"power {chosen.value} {node.hostname} via {cls.label}",
    )
    operation.steps.append(
        OperationStep(
            seq=1,
            node_id=node_id,
            name=f"power {chosen.value} {node.hostname}",
            status=OperationStatus.RUNNING,
            message="",
            detail={},
            started_at=utcnow(),
        )
    )
    session.commit()
    return PreparedPower(operation.id, snapshot, chosen, schedule)


async def run_power(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedPower,
    on_event: Callable[[str, NodeOutcome], None] | None = None,
) -> Operation:
    """Carry out a prepared action and close its operation."""
    lookup = DRIVERS.lookup(settings)
    if prepared.action == PowerAction.ON:
        outcomes = await power_on([prepared.node], prepared.schedule, lookup, on_event)
    elif prepared.action == PowerAction.CYCLE:
        outcomes = await power_cycle([prepared.node], prepared.schedule, lookup, on_event)
    else:
        soft = prepared.action == PowerAction.SOFT
        outcomes = await power_off([prepared.node], prepared.schedule, lookup, on_event, soft=soft)
    [outcome] = outcomes
    good = {OutcomeState.UP, OutcomeState.OFF} | (set() if prepared.schedule.wait else {OutcomeState.SENT})
    status = OperationStatus.SUCCEEDED if outcome.state in good else OperationStatus.FAILED

    def close(session: Session) -> Operation:
        operation = session.get_one(Operation, prepared.operation_id)
        for step in operation.steps:
            step.status, step.message, step.detail = status, outcome.describe(), outcome.as_dict()
            step.finished_at = utcnow()
        return finish_operation(
            session,
            operation,
            status=status,
            summary=f"power {prepared.action.value} {prepared.node.hostname}: {outcome.describe()}",
            result={"nodes": [outcome.as_dict()], "verified": prepared.schedule.wait},
        )

    # In a worker thread: a server runs this on its event loop, beside requests.
    return await in_thread_session(session_factory, close)


@dataclass(frozen=True)
class PowerTarget:
    """A node whose power state can be read, with its driver class (read from the database first)."""

    node: NodeSnapshot
    driver: type[PowerDriver]
    # The refresher's last TCP probe: what a magic-packet node's driver would read (None: not probed).
    probed_up: bool | None = None
    probed_at: datetime | None = None


def power_target(session: Session, node_id: int) -> PowerTarget:
    """The node and its driver for a status read; 409 when its driver cannot read the power state."""
    node = get_node(session, node_id)
    snapshot = snapshot_of(node)
    cls = DRIVERS.get(node.wol_method)
    if cls is None:
        raise UnsupportedActionError(f"{snapshot.label}: no power driver for method {node.wol_method!r}")
    if not cls.supports(STATUS):
        raise cls.unsupported(snapshot, STATUS)
    return PowerTarget(snapshot, cls, node.reachable, node.reachability_checked_at)


async def read_power(settings: Settings, target: PowerTarget) -> PowerState:
    """Ask the node's driver for its power state now (a TCP probe for magic-packet nodes)."""
    driver = DRIVERS.lookup(settings)(target.node)
    if not isinstance(driver, PowerDriver):
        raise UnsupportedActionError(driver.message)
    try:
        return await driver.query(target.node)
    finally:
        await driver.aclose()


def describe_power(target: PowerTarget, state: PowerState | None, **extra: Any) -> dict[str, Any]:
    """The status document of the API and CLI (``state`` None: not known)."""
    cls = target.driver
    source = cls.label if cls.verify_by_query else f"TCP probe of port {target.node.probe_port}"
    return {
        "node_id": target.node.node_id,
        "hostname": target.node.hostname,
        "method": target.node.method,
        "state": (state or PowerState.UNKNOWN).value,
        "source": source,
        "actions": sorted(a for a in cls.can() if a != STATUS),
        **extra,
    }


async def power_status(session: Session, settings: Settings, node_id: int) -> dict[str, Any]:
    """The node's power state as its driver reports it now (a TCP probe for magic-packet nodes)."""
    target = power_target(session, node_id)
    return describe_power(target, await read_power(settings, target))
