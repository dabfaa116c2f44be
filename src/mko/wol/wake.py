"""Waking nodes and clusters: checks, the operation record, and the run over the power drivers.

A wake is split in two so adapters can choose how to wait for it: :func:`start_wake` checks the
request and records the operation (fast, in the caller's session); :func:`run_wake` does the work
(async, its own session) and may run in the foreground (CLI) or as a background task (API).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from mko.agents.jobs import wake_remote
from mko.agents.routing import routed_to_agent, split_by_site
from mko.inventory.clusters import empty_cluster, get_cluster
from mko.inventory.dependencies import dependencies_of
from mko.inventory.nodes import get_node, list_nodes
from mko.inventory.snapshots import node_rows, params_of, snapshot, snapshots
from mko.operations import ownership
from mko.operations.interrupted import interrupted_reason
from mko.operations.kinds import WAKE_KIND_PREFIX
from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node, NodeRole
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.session import in_thread_session
from mko.platform.errors import ConflictError, InputError
from mko.platform.settings import Settings
from mko.power.base import (
    AttemptError,
    Capability,
    NodeOutcome,
    NodeSnapshot,
    OutcomeState,
    PowerDriver,
    WakeSchedule,
    power_on,
    power_on_levels,
)
from mko.power.registry import DRIVERS
from mko.wol.plan import describe_levels, levels

__all__ = [
    "PreparedWake",
    "make_schedule",
    "plan_cluster_wake",
    "resume_wake",
    "run_wake",
    "start_requested_wake",
    "start_wake",
]

log = logging.getLogger("mko.wake")


def make_schedule(
    settings: Settings,
    *,
    retries: int | None = None,
    delay: float | None = None,
    wait: bool = False,
    timeout: float | None = None,
    stagger: float | None = None,
) -> WakeSchedule:
    """A schedule from request options and settings defaults; out-of-range values name their field.

    ``stagger`` None: the cluster's own (``power_stagger``), applied by :func:`start_wake`."""
    retries = settings.wol_default_retries if retries is None else retries
    delay = settings.wol_default_delay if delay is None else delay
    timeout = settings.wol_default_timeout if timeout is None else timeout
    if not 1 <= retries <= 100:
        raise InputError("retries", f"{retries} is out of range (1-100)")
    if not 0 <= delay <= 60:
        raise InputError("delay", f"{delay} is out of range (0-60 seconds)")
    if not 0 < timeout <= 3600:
        raise InputError("timeout", f"{timeout} is out of range (0-3600 seconds)")
    if stagger is not None and not 0 <= stagger <= 600:
        raise InputError("stagger", f"{stagger} is out of range (0-600 seconds)")
    return WakeSchedule(
        retries=retries,
        delay=delay,
        wait=wait,
        timeout=timeout,
        probe_interval=settings.probe_interval,
        probe_timeout=settings.probe_timeout,
        stagger=stagger or 0.0,
        device_gap=settings.power_device_gap,
    )


@dataclass
class PreparedWake:
    """A checked wake request and its running operation."""

    operation_id: int
    nodes: list[NodeSnapshot]
    schedule: WakeSchedule
    skipped: dict[int, str] = field(default_factory=dict)
    coalesced: bool = False  # joined a wake of the same node that is still running: nothing new to run
    left: dict[int, str] = field(default_factory=dict)  # nodes not to wake, on purpose (a restore's)
    depends: dict[int, set[int]] = field(default_factory=dict)  # node → what it waits for (depends_on)
    # The steps of every node are not written yet: :func:`run_wake` builds and writes them once the
    # first packets are out (``left_names``: the host names of the nodes left alone, for theirs).
    steps_pending: bool = False
    left_names: dict[int, str] = field(default_factory=dict, repr=False)


def _running_wake_of(session: Session, node_id: int, within: float) -> Operation | None:
    """A wake of ``node_id`` started less than ``within`` seconds ago and still running."""
    if within <= 0:
        return None
    ownership.close_orphaned(session)  # never join a wake whose process is gone
    since = utcnow() - timedelta(seconds=within)
    query = (
        select(Operation)
        .join(OperationStep)
        .where(
            Operation.kind.startswith(WAKE_KIND_PREFIX),
            Operation.status == OperationStatus.RUNNING,
            Operation.started_at >= since,
            OperationStep.node_id == node_id,
            OperationStep.status == OperationStatus.RUNNING,
        )
        .order_by(Operation.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def _running_cluster_wake(session: Session, cluster_id: int, within: float) -> Operation | None:
    """A wake of cluster ``cluster_id`` started less than ``within`` seconds ago and still running."""
    if within <= 0:
        return None
    ownership.close_orphaned(session)  # never join a wake whose process is gone
    query = (
        select(Operation)
        .where(
            Operation.kind == f"{WAKE_KIND_PREFIX}_cluster",
            Operation.target_id == cluster_id,
            Operation.status == OperationStatus.RUNNING,
            Operation.started_at >= utcnow() - timedelta(seconds=within),
        )
        .order_by(Operation.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def _not_wakeable_reason(node: Node, built: NodeSnapshot | None = None) -> str | None:
    """Why a node cannot be woken as configured, or None (``built``: its snapshot, if made already)."""
    if not node.wol_enabled:
        return (
            f"Wake-on-LAN is disabled for node {node.id} ({node.hostname}) in mko: `mko wol configure"
            f" {node.id} --enable` (`mko wol enable {node.id}` also arms its network card over SSH)"
        )
    if node.wol_method not in DRIVERS:
        return f"node {node.id} ({node.hostname}): no power driver for method {node.wol_method!r}"
    params = built.params if built is not None else params_of(node)
    for missing in params.missing(enabled=True):
        meta = type(params).fields_meta()[missing]
        what = meta.help.split(": ", 1)[-1]
        fix = f"`mko wol configure {node.id} {meta.cli_option(missing)} …`"
        if missing == "wol_mac_address":
            fix += f", or read it over SSH with `mko wol collect-mac --node-ids {node.id}`"
        return f"node {node.id} ({node.hostname}) has no {what} ({missing}): {fix}"
    return None


def start_requested_wake(
    session: Session,
    settings: Settings,
    *,
    target_type: str,
    target_id: int | None,
    schedule: WakeSchedule,
    actor: Actor,
    node_ids: Sequence[int] = (),
) -> PreparedWake:
    """A wake a person asked for, from the API, the web UI or the CLI alike: like :func:`start_wake`, and
    a wake of a node or a cluster asked for while a wake of it started less than
    ``settings.wake_coalesce_seconds`` ago still runs joins that wake (``coalesced``: a double click, a
    retrying script) instead of sending more packets."""
    return start_wake(
        session,
        target_type=target_type,
        target_id=target_id,
        schedule=schedule,
        actor=actor,
        node_ids=node_ids,
        coalesce_seconds=settings.wake_coalesce_seconds,
    )


def start_wake(
    session: Session,
    *,
    target_type: str,
    target_id: int | None,
    schedule: WakeSchedule,
    actor: Actor,
    node_ids: Sequence[int] = (),
    coalesce_seconds: float = 0.0,
    leave: Mapping[int, str] | None = None,
) -> PreparedWake:
    """Check a wake of a node, a cluster, or several nodes (``target_type="nodes"`` with ``node_ids``)
    and record its operation; ConflictError when nothing can be woken.

    ``leave`` (a cluster wake): nodes left alone on purpose, each with why ("answering: left as it
    is"); they get a step saying so and count neither as woken nor as skipped.
    """
    leave = dict(leave or {})
    left_alone: list[Node] = []
    prebuilt: dict[int, NodeSnapshot] = {}
    if target_type == "node" and target_id is not None:
        node = get_node(session, target_id)
        reason = _not_wakeable_reason(node)
        if reason:
            raise ConflictError(reason)
        # A burst of wakes of one node (double clicks, retrying scripts, a spoofing flood) joins the
        # wake already under way instead of multiplying packets and operations.
        running = _running_wake_of(session, node.id, coalesce_seconds)
        if running is not None:
            log.info("wake of node %s by %s joined running operation %s", node.id, actor.name, running.id)
            return PreparedWake(running.id, [snapshot(node)], schedule, coalesced=True)
        nodes, skipped = [node], {}
    elif target_type == "nodes":
        if not node_ids:
            raise InputError("node_ids", "name at least one node")
        members = [get_node(session, node_id) for node_id in dict.fromkeys(node_ids)]
        skipped = {n.id: r for n in members if (r := _not_wakeable_reason(n))}
        nodes = [n for n in members if n.id not in skipped]
        if not nodes:
            raise ConflictError("none of these nodes can be woken: " + "; ".join(skipped.values()))
    elif target_type == "cluster" and target_id is not None:
        get_cluster(session, target_id)
        # Two people (or a person and a retrying script) waking one cluster at once: the second joins.
        running = _running_cluster_wake(session, target_id, coalesce_seconds) if not leave else None
        if running is not None:
            log.info(
                "wake of cluster %s by %s joined running operation %s", target_id, actor.name, running.id
            )
            return PreparedWake(running.id, [], schedule, coalesced=True)
        # One core query and pure building: at 10,000 nodes, ORM objects cost more than the packets.
        members = node_rows(session, cluster_id=target_id)
        if not members:
            raise empty_cluster(target_id)
        left_alone = [n for n in members if n.id in leave]
        members = [n for n in members if n.id not in leave]
        with_driver = [n for n in members if n.wol_method in DRIVERS]
        prebuilt = dict(zip((n.id for n in with_driver), snapshots(session, with_driver), strict=True))
        skipped = {n.id: r for n in members if (r := _not_wakeable_reason(n, prebuilt.get(n.id)))}
        nodes = [n for n in members if n.id not in skipped]
        if not nodes:
            raise ConflictError(
                f"no node of cluster {target_id} can be woken: " + "; ".join(skipped.values())
            )
    else:
        raise InputError("target_type", f"cannot wake a {target_type!r}")
    built = [prebuilt[n.id] for n in nodes] if prebuilt else snapshots(session, nodes)
    depends = dependencies_of(session, [n.id for n in nodes])
    levels(built, depends)  # a cycle is refused here, before anything is recorded
    schedule = _with_cluster_stagger(session, target_id if target_type == "cluster" else None, schedule)
    operation = start_operation(
        session,
        kind=f"{WAKE_KIND_PREFIX}_{target_type}",
        target_type=target_type,
        target_id=target_id,
        actor=actor,
        parameters=schedule.as_dict() | ({"node_ids": list(dict.fromkeys(node_ids))} if node_ids else {}),
        summary=f"waking {len(built)} node(s)",
    )
    prepared = PreparedWake(
        operation.id,
        built,
        schedule,
        skipped,
        left={n.id: leave[n.id] for n in left_alone},
        depends=depends,
        steps_pending=True,
        left_names={n.id: n.hostname for n in left_alone},
    )
    # Many nodes, all woken from here: the operation is recorded now, its steps once the first packets
    # are out (run_wake), so bookkeeping for every node never delays a packet. A single node's step,
    # and steps agents report to, are written at once.
    if target_type == "node" or any(routed_to_agent(n) for n in built):
        session.execute(insert(cast("Table", OperationStep.__table__)), _pending_steps(prepared))
    session.commit()
    return prepared


def _steps(
    operation_id: int,
    built: Sequence[NodeSnapshot],
    skipped: Mapping[int, str],
    left_names: Mapping[int, str],
    left: Mapping[int, str],
) -> list[dict[str, Any]]:
    """A wake's step rows: one running per node to wake, one closed per skipped node and node left
    alone, for one multi-row INSERT on the table (not one ORM object per node)."""
    now = utcnow()
    # Nodes of another site are woken by that site's agent (mko.agents); their steps say so.
    via = {n.node_id: f" via site {n.site}" for n in built if routed_to_agent(n)}
    steps: list[dict[str, Any]] = [
        _step(
            operation_id,
            node.node_id,
            f"wake {node.hostname}{via.get(node.node_id, '')}",
            "",
            now,
            finished=False,
        )
        for node in sorted(built, key=lambda n: n.node_id)
    ]
    steps += [_step(operation_id, i, "wake skipped", why, now) for i, why in sorted(skipped.items())]
    steps += [_step(operation_id, i, f"leave {name}", left[i], now) for i, name in left_names.items()]
    for seq, step in enumerate(steps, start=1):
        step["seq"] = seq
    return steps


def _pending_steps(prepared: PreparedWake) -> list[dict[str, Any]]:
    """The step rows of a wake whose steps are not written yet (``steps_pending``); none after."""
    if not prepared.steps_pending:
        return []
    prepared.steps_pending = False
    return _steps(prepared.operation_id, prepared.nodes, prepared.skipped, prepared.left_names, prepared.left)


def _record_steps(session: Session, steps: list[dict[str, Any]]) -> None:
    session.execute(insert(cast("Table", OperationStep.__table__)), steps)
    session.commit()


def plan_cluster_wake(session: Session, cluster_id: int, schedule: WakeSchedule) -> dict[str, Any]:
    """What a wake of the cluster would do, without doing it (``--dry-run``): the dependency levels
    with each node's method and start offset, and the nodes that would be skipped."""
    get_cluster(session, cluster_id)
    members = list_nodes(session, cluster_id)
    skipped = {n.id: r for n in members if (r := _not_wakeable_reason(n))}
    nodes = [n for n in members if n.id not in skipped]
    built = snapshots(session, nodes)
    depends = dependencies_of(session, [n.id for n in nodes])
    schedule = _with_cluster_stagger(session, cluster_id, schedule)
    planned = levels(built, depends)
    return {
        "cluster_id": cluster_id,
        "stagger": schedule.stagger,
        "device_gap": schedule.device_gap,
        "levels": describe_levels(planned, depends, schedule.stagger),
        "skipped": [{"node_id": k, "reason": v} for k, v in sorted(skipped.items())],
    }


def _with_cluster_stagger(session: Session, cluster_id: int | None, schedule: WakeSchedule) -> WakeSchedule:
    """The cluster's own stagger (``power_stagger``) where the request named none (None: no cluster)."""
    if cluster_id is None:
        return schedule
    stagger = get_cluster(session, cluster_id).power_stagger
    return dataclasses.replace(schedule, stagger=stagger) if stagger and not schedule.stagger else schedule


def _step(
    operation_id: int, node_id: int, name: str, message: str, now: datetime, *, finished: bool = True
) -> dict[str, Any]:
    """One step row of a wake: running, or (``finished``) a skipped node's or a node left alone."""
    status = OperationStatus.RUNNING
    if finished:
        status = OperationStatus.CANCELLED if name == "wake skipped" else OperationStatus.SUCCEEDED
    return {
        "operation_id": operation_id,
        "node_id": node_id,
        "name": name,
        "status": status,
        "message": message,
        "detail": {},
        "started_at": now,
        "finished_at": now if finished else None,
    }


def _driver_lookup(settings: Settings) -> Callable[[NodeSnapshot], PowerDriver | AttemptError]:
    # Each node gets whichever driver its method names: packets, Proxmox, IPMI or Redfish.
    return DRIVERS.lookup(settings)


def _one_burst(prepared: PreparedWake) -> bool:
    """Whether the wake is over as soon as its packets are out: packets only, every round at once (one
    round, or no delay between them), no verification, no stagger and no dependency levels."""
    schedule = prepared.schedule
    # Magic packets: an attempt is a packet sent at once, no API to answer, no device to wait for.
    packets = DRIVERS.with_capability(Capability.WAKE_ONLY)
    return (
        not schedule.wait
        and (schedule.retries == 1 or schedule.delay == 0)
        and not schedule.stagger
        and not any(prepared.depends.values())
        and all(node.method in packets for node in prepared.nodes)
    )


_STEP_STATUS = {
    OutcomeState.UP: OperationStatus.SUCCEEDED,
    OutcomeState.SENT: OperationStatus.SUCCEEDED,
    OutcomeState.NOT_UP: OperationStatus.FAILED,
    OutcomeState.FAILED: OperationStatus.FAILED,
}


async def run_wake(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedWake,
    on_event: Callable[[str, NodeOutcome], None] | None = None,
) -> Operation:
    """Carry out a prepared wake and close its operation with one result per node.

    Nodes of another site go to that site's agents as wake jobs (:func:`mko.agents.jobs.wake_remote`) while
    the local ones are woken here; both halves run at once and end in the same operation.
    """
    local, remote = split_by_site(prepared.nodes)
    sending = asyncio.gather(
        _wake_local(local, prepared, settings, on_event) if local else _none(),
        wake_remote(session_factory, settings, prepared.operation_id, remote, prepared.schedule, on_event)
        if remote
        else _none(),
    )
    try:
        if prepared.steps_pending and _one_burst(prepared):
            # Over once its packets are out: each step is written once, closed with its outcome, by
            # _close (not an INSERT of running steps and an UPDATE of each).
            await asyncio.wait({sending})
        elif prepared.steps_pending:
            await asyncio.sleep(0)  # the first packets go out before the bookkeeping of every node
            steps = _pending_steps(prepared)
            await in_thread_session(session_factory, lambda session: _record_steps(session, steps))
        outcomes, parts = await sending
    except asyncio.CancelledError:
        sending.cancel()
        # Here, not in a worker thread: the task is being cancelled (the server stops) and must record
        # that before it ends; the loop has nothing else left to serve.
        with session_factory() as session:
            _close(session, prepared, [], cancelled=True)
        raise
    except Exception:
        sending.cancel()  # the steps could not be written: no packets go on without their record
        raise
    notes: dict[int, dict[str, Any]] = {}
    for part in parts:
        outcomes.extend(part.outcomes.values())
        notes |= part.notes()
    order = {n.node_id: (n.role != NodeRole.CONTROL_PLANE, n.node_id) for n in prepared.nodes}
    outcomes.sort(key=lambda o: order.get(o.node_id, (True, o.node_id)))
    # In a worker thread: a server runs wakes on its event loop, beside requests.
    return await in_thread_session(
        session_factory, lambda session: _close(session, prepared, outcomes, cancelled=False, notes=notes)
    )


async def _wake_local(
    nodes: list[NodeSnapshot],
    prepared: PreparedWake,
    settings: Settings,
    on_event: Callable[[str, NodeOutcome], None] | None,
) -> list[NodeOutcome]:
    """This orchestrator's nodes: all at once, or level after level when some depend on others."""
    planned = levels(nodes, prepared.depends)
    if len(planned) == 1:
        return await power_on(nodes, prepared.schedule, _driver_lookup(settings), on_event)
    return await power_on_levels(
        planned, prepared.schedule, lambda: _driver_lookup(settings), on_event, prepared.depends
    )


async def _none() -> list[Any]:
    return []


def _close(
    session: Session,
    prepared: PreparedWake,
    outcomes: list[NodeOutcome],
    *,
    cancelled: bool,
    notes: Mapping[int, dict[str, Any]] | None = None,
) -> Operation:
    """Record every node's outcome and close the operation, in one transaction.

    The returned operation carries its status, summary and result; its steps are not loaded (a wake
    of 10,000 nodes has 10,000): read them with :func:`mko.operations.records.get_operation`.
    """
    operation = session.get_one(Operation, prepared.operation_id)
    notes = notes or {}
    described = {o.node_id: o.as_dict() | notes.get(o.node_id, {}) for o in outcomes}
    closed = {
        o.node_id: {
            "status": _STEP_STATUS[o.state],
            "message": o.describe() + _via(notes.get(o.node_id)),
            "detail": described[o.node_id],
        }
        for o in outcomes
    }
    if prepared.steps_pending:
        _insert_closed_steps(session, _pending_steps(prepared), closed)
    else:
        _close_running_steps(session, operation.id, closed)
    result: dict[str, Any] = {
        "nodes": [described[o.node_id] for o in outcomes],
        "skipped": [{"node_id": k, "reason": v} for k, v in sorted(prepared.skipped.items())],
        "left": [{"node_id": k, "reason": v} for k, v in sorted(prepared.left.items())],
        "verified": prepared.schedule.wait,
    }
    if cancelled:
        return finish_operation(
            session, operation, status=OperationStatus.CANCELLED, summary="cancelled", result=result
        )
    # Without wait "sent" is success; "up" always is (a dependency level is verified before the next).
    good_states = {OutcomeState.UP} if prepared.schedule.wait else {OutcomeState.SENT, OutcomeState.UP}
    good = [o for o in outcomes if o.state in good_states]
    verb = "up" if prepared.schedule.wait else "sent (not verified)"
    if not prepared.schedule.wait and any(o.state == OutcomeState.UP for o in outcomes):
        verb = "sent or up"
    summary = f"{len(good)}/{len(outcomes)} node(s) {verb}"
    bad = [f"{o.hostname}: {o.describe()}" for o in outcomes if o.state not in good_states]
    if prepared.skipped:
        summary += f", {len(prepared.skipped)} skipped"
    if prepared.left:
        summary += f", {len(prepared.left)} left as they were"
    if bad:
        summary += "; " + "; ".join(bad)
    if len(good) == len(outcomes) and not prepared.skipped:
        status = OperationStatus.SUCCEEDED
    elif good:
        status = OperationStatus.PARTIAL
    else:
        status = OperationStatus.FAILED
    return finish_operation(session, operation, status=status, summary=summary, result=result)


def _insert_closed_steps(
    session: Session, steps: list[dict[str, Any]], closed: Mapping[int, dict[str, Any]]
) -> None:
    """The steps of a wake that never wrote them, each with its outcome, in one INSERT (a step with no
    outcome: the wake was cancelled before it)."""
    now = utcnow()
    cancelled_step = {"status": OperationStatus.CANCELLED, "message": "cancelled before it finished"}
    for step in steps:
        if step["finished_at"] is None:
            step.update(closed.get(step["node_id"], cancelled_step), finished_at=now)
    session.execute(insert(cast("Table", OperationStep.__table__)), steps)


def _close_running_steps(session: Session, operation_id: int, closed: Mapping[int, dict[str, Any]]) -> None:
    """Each running step's outcome by one executemany UPDATE of what differs per node (no ORM object per
    step), then one UPDATE each for what every step shares: its end, and a cancelled step's words."""
    table = cast("Table", OperationStep.__table__)
    running = select(table.c.id, table.c.node_id).where(
        table.c.operation_id == operation_id, table.c.status == OperationStatus.RUNNING
    )
    finished = [
        closed[node_id] | {"step_id": step_id}
        for step_id, node_id in session.execute(running)
        if node_id in closed
    ]
    if finished:
        session.execute(update(table).where(table.c.id == bindparam("step_id")), finished)
    of_this = table.c.operation_id == operation_id
    session.execute(
        update(table)
        .where(of_this, table.c.status == OperationStatus.RUNNING)
        .values(status=OperationStatus.CANCELLED, message="cancelled before it finished")
    )
    session.execute(update(table).where(of_this, table.c.finished_at.is_(None)).values(finished_at=utcnow()))


def _via(note: Mapping[str, Any] | None) -> str:
    """`` (site b, agent pi-b)`` for a node an agent handled."""
    if not note:
        return ""
    agent = f", agent {note['agent']}" if note.get("agent") else ""
    return f" (site {note['site']}{agent})"


async def resume_wake(
    session_factory: sessionmaker[Session], settings: Settings, operation_id: int, previous: str, me: str
) -> Operation:
    """Re-run a wake interrupted on ``previous`` to completion under the same operation."""
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        nodes: list[NodeSnapshot] = []
        skipped: dict[int, str] = {}
        now = utcnow()
        for step in operation.steps:
            if step.node_id is None:
                continue
            if step.name == "wake skipped":
                skipped[step.node_id] = step.message
                continue
            node = session.get(Node, step.node_id)
            if node is None:
                step.status, step.message, step.finished_at = OperationStatus.FAILED, "node deleted", now
                continue
            # Every node again, also those already up: a packet to a running machine does nothing, and
            # the probe then proves it is up in this operation's result.
            nodes.append(snapshot(node))
            step.status, step.message, step.finished_at = OperationStatus.RUNNING, "", None
        params = operation.parameters
        schedule = WakeSchedule(
            retries=int(params.get("retries", settings.wol_default_retries)),
            delay=float(params.get("delay", settings.wol_default_delay)),
            wait=bool(params.get("wait", False)),
            timeout=float(params.get("timeout", settings.wol_default_timeout)),
            probe_interval=settings.probe_interval,
            probe_timeout=settings.probe_timeout,
        )
        operation.status, operation.finished_at = OperationStatus.RUNNING, None
        resumed = {"from": previous, "by": me, "at": now.isoformat()}
        session.commit()
        record_step(
            session,
            operation,
            name="resumed after failover",
            status=OperationStatus.SUCCEEDED,
            message=f"{interrupted_reason(previous, repeatable=True)}; resumed by {me}:"
            " packets and probes again",
        )
    log.warning("wake operation %s: resumed by %s after %s stopped", operation_id, me, previous)
    woken = await run_wake(session_factory, settings, PreparedWake(operation_id, nodes, schedule, skipped))
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        operation.result = {**operation.result, "resumed": resumed}
        if not operation.summary.startswith("resumed"):
            operation.summary = f"resumed after failover on {previous}: {woken.summary}"
        session.commit()
        return operation
