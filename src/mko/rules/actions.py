"""What a rule can do to a cluster: wake it (and recover it), shut it down gracefully
or by force; each action stops at a safe point when told to."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.cluster.plan import plan_shutdown
from mko.cluster.recovery import run_recovery, start_recovery
from mko.cluster.shutdown import run_shutdown, start_shutdown
from mko.inventory.feeds import FeedCheck, check_feeds, feeds_of
from mko.inventory.nodes import list_nodes
from mko.operations.records import Actor
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.outages import OutagePhase
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import UPS, PowerEvent
from mko.platform.settings import Settings
from mko.ups import outages
from mko.wol.wake import make_schedule, run_wake, start_wake

__all__ = [
    "ACTIONS",
    "ActionContext",
    "ActionResult",
    "ClusterActionHandler",
    "ShutdownClusterAction",
    "StopSignal",
    "WakeClusterAction",
]


class StopSignal(asyncio.Event):
    """Set when a running action must end at its next safe point; ``reason`` says why."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def request(self, reason: str) -> None:
        """Ask the action to stop, saying why."""
        self.reason = reason
        self.set()


@dataclass(frozen=True)
class ActionContext:
    """Everything an action needs: the rule, the event that fired it, who acts, where to record."""

    rule_id: int
    rule_name: str
    cluster_id: int
    ups_id: int
    ups_name: str
    event: PowerEvent
    event_id: int
    actor: Actor
    session_factory: sessionmaker[Session]
    settings: Settings
    # Set by the engine when a conflicting action supersedes this one (handlers with
    # stops_at_safe_point end at their next safe point instead of being cancelled).
    stop: StopSignal = field(default_factory=StopSignal)
    operation_id: int = 0  # the rule execution's own operation (actions link theirs to its step)
    resumed_from: str | None = None  # the instance this execution was taken over from (mko.ha.failover)
    instance: str = ""  # the instance acting now
    why: str = ""  # the triggering event's message, for the records (e.g. "mains returned while …")
    # Only the cluster's nodes the UPS feeds (RuleTarget.FED_NODES), and whether a UPS is on mains now.
    fed_only: bool = False
    on_mains: Callable[[int], bool] = field(default=lambda _ups_id: False)


def feed_check(context: ActionContext) -> tuple[FeedCheck, list[Node]]:
    """Which of the cluster's nodes this UPS's event concerns, and which another UPS still carries
    (mko.inventory.feeds), with the cluster's nodes (detached)."""
    with context.session_factory() as session:
        nodes = list_nodes(session, context.cluster_id)
        feeds = feeds_of(session, [n.id for n in nodes])
        names = {u.id: u.name for u in session.scalars(select(UPS))}
        for node in nodes:
            session.expunge(node)
    check = check_feeds(
        [n.id for n in nodes], feeds, context.ups_id, context.on_mains, fed_only=context.fed_only
    )
    check.ups_names = names
    return check, nodes


def link_operation(context: ActionContext, key: str, operation_id: int) -> None:
    """Note an action's own operation on the rule execution's running step, so a failover finds it."""
    if not context.operation_id:
        return
    with context.session_factory() as session:
        operation = session.get(Operation, context.operation_id)
        if operation is None:
            return
        for step in operation.steps:
            if step.status == OperationStatus.RUNNING:
                step.detail = {**step.detail, key: operation_id}
        session.commit()


def _linked(context: ActionContext) -> dict[str, Any]:
    with context.session_factory() as session:
        operation = session.get(Operation, context.operation_id)
        if operation is None:
            return {}
        for step in operation.steps:
            if step.status == OperationStatus.RUNNING:
                return dict(step.detail)
    return {}


@dataclass(frozen=True)
class ActionResult:
    """How an action ended; ``operation_id`` is the action's own operation, when it made one."""

    status: OperationStatus
    summary: str
    operation_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the rule operation's result


class ClusterActionHandler(ABC):
    """One cluster action a rule can take; register an instance in :data:`ACTIONS` to make it available.

    When a conflicting action supersedes it (a wake while a shutdown runs), the engine sets
    ``context.stop``; a handler with ``stops_at_safe_point`` is then left to end by itself at its next
    safe point (and report ``cancelled``), any other is cancelled. When mko stops, the task running
    :meth:`run` is cancelled: a handler must leave the cluster safe — finish the step in progress (e.g.
    under ``asyncio.shield``: no half-stopped control plane), record it in its own operation — and let
    ``CancelledError`` propagate. The superseding action starts only after ``run`` returned or raised.
    """

    action: ClassVar[ClusterAction]
    stops_at_safe_point: ClassVar[bool] = False
    # Whether a failover may carry on an execution a dead instance left running (see resume()).
    repeatable: ClassVar[bool] = False

    @abstractmethod
    async def run(self, context: ActionContext) -> ActionResult:
        """Carry the action out on ``context.cluster_id`` and report how it ended."""

    async def resume(self, context: ActionContext) -> ActionResult:
        """Carry on after a failover (``context.resumed_from`` died mid-way); by default: refuse."""
        from mko.operations.interrupted import interrupted_reason

        return ActionResult(OperationStatus.FAILED, interrupted_reason(context.resumed_from or "?"))


class WakeClusterAction(ClusterActionHandler):
    """``wake_on_lan``: wake every node and verify each answers (mko.wol.wake), then recover the cluster."""

    action = ClusterAction.WAKE_ON_LAN
    repeatable = True

    async def resume(self, context: ActionContext) -> ActionResult:
        """After a failover: finish the wake the dead instance began (same operation), then recover."""
        from mko.operations.interrupted import fail_interrupted
        from mko.wol.wake import resume_wake

        linked = _linked(context)
        wake_id = linked.get("operation_id")
        with context.session_factory() as session:
            woken = session.get(Operation, wake_id) if isinstance(wake_id, int) else None
        if woken is None:  # it died before the wake started: start it now
            return await self.run(context)
        if woken.status in (OperationStatus.PENDING, OperationStatus.RUNNING, OperationStatus.CANCELLED):
            woken = await resume_wake(
                context.session_factory,
                context.settings,
                woken.id,
                context.resumed_from or "?",
                context.instance,
            )
        recovery_id = linked.get("recovery_operation_id")
        if isinstance(recovery_id, int):
            with context.session_factory() as session:
                recovery = session.get(Operation, recovery_id)
                if recovery is not None and recovery.status in (
                    OperationStatus.PENDING,
                    OperationStatus.RUNNING,
                ):
                    # Its steps (microk8s start, Ready, uncordon) are safe to run again: a new recovery does.
                    fail_interrupted(session, recovery, context.resumed_from or "?")
                elif recovery is not None:
                    return self._combine(woken, recovery)
        return await self._recover(context, woken)

    async def run(self, context: ActionContext) -> ActionResult:
        """Wake with verification (every node up before ``rule_wake_timeout``), then the recovery.

        The recovery (``microk8s start`` everywhere, every node Ready, uncordon what mko drained) runs
        when the rule's ``recover_after_wake`` is set and at least one node woke; success needs both.
        When the cluster is down for this UPS (an open outage), this is the outage's restore: only the
        nodes that were up before it and do not answer now are woken, and only they are recovered.
        """
        with context.session_factory() as session:
            found = outages.find_open(session, cluster_id=context.cluster_id, ups_id=context.ups_id)
            outage_id = found[-1].id if found else None
        if outage_id is not None:
            return await self._restore(context, outage_id)
        leave, node_ids = None, None
        if context.fed_only:
            check, nodes = feed_check(context)
            leave = {n: f"not fed by UPS {context.ups_name}: left as it is" for n in check.not_fed}
            node_ids = sorted({n.id for n in nodes} - set(leave))
            if not node_ids:
                return ActionResult(OperationStatus.SUCCEEDED, f"UPS {context.ups_name} feeds no node here")
        woken = await self._wake(context, leave)
        assert woken is not None
        return await self._recover(context, woken, node_ids=node_ids)

    async def _wake(self, context: ActionContext, leave: dict[int, str] | None) -> Operation | None:
        settings, factory = context.settings, context.session_factory
        schedule = make_schedule(settings, wait=True, timeout=settings.rule_wake_timeout)
        with factory() as session:
            prepared = start_wake(
                session,
                target_type="cluster",
                target_id=context.cluster_id,
                schedule=schedule,
                actor=context.actor,
                leave=leave,
            )
        link_operation(context, "operation_id", prepared.operation_id)
        return await run_wake(factory, settings, prepared)

    async def _restore(self, context: ActionContext, outage_id: int) -> ActionResult:
        """The outage's restore: wake who was up before and is down now, recover them, close the outage."""
        settings, factory = context.settings, context.session_factory
        with factory() as session:
            outage = outages.get_outage(session, outage_id)
            nodes = list_nodes(session, context.cluster_id)
            for node in nodes:
                session.expunge(node)
            up_before = set(outage.nodes_up)
            # A fed-nodes outage holds only the nodes it shut down; the others were never its business.
            outside = "not shut down for this UPS: left as it is" if context.fed_only else None
            outages.set_phase(
                session,
                outage,
                OutagePhase.RESTORING,
                f"restoring: rule {context.rule_id} on {context.event.value}"
                + (f" ({context.why})" if context.why else ""),
                restore_operation_id=context.operation_id or None,
            )
        link_operation(context, "outage_id", outage_id)
        try:
            answering = await outages.answering(nodes, settings)
            leave = {
                n.id: outside or "was off before the outage: left off" for n in nodes if n.id not in up_before
            }
            leave |= {n.id: "answering: left as it is" for n in nodes if n.id in up_before & answering}
            woken = None
            if len(leave) < len(nodes):
                woken = await self._wake(context, leave)
            result = await self._recover(context, woken, node_ids=sorted(up_before), outage_id=outage_id)
        except BaseException as exc:
            # Superseded (power lost again) or mko stopping: the cluster is still down for power.
            with factory() as session:
                why = context.stop.reason or f"interrupted: {type(exc).__name__}"
                outages.set_phase(session, outages.get_outage(session, outage_id), OutagePhase.DOWN, why)
            raise
        with factory() as session:
            outage = outages.get_outage(session, outage_id)
            if result.status == OperationStatus.CANCELLED:
                outages.set_phase(session, outage, OutagePhase.DOWN, f"restore stopped: {result.summary}")
            else:
                phase = (
                    OutagePhase.RESTORED
                    if result.status == OperationStatus.SUCCEEDED
                    else OutagePhase.RESTORE_FAILED
                )
                outages.close(session, outage, phase, result.summary)
        return ActionResult(
            result.status, result.summary, result.operation_id, result.extra | {"outage_id": outage_id}
        )

    async def _recover(
        self,
        context: ActionContext,
        woken: Operation | None,
        *,
        node_ids: list[int] | None = None,
        outage_id: int | None = None,
    ) -> ActionResult:
        settings, factory = context.settings, context.session_factory
        with factory() as session:
            rule = session.get(PowerRule, context.rule_id)
            recover = rule is not None and rule.recover_after_wake
        if not recover:
            if woken is None:
                return ActionResult(OperationStatus.SUCCEEDED, "every node that was up before answers")
            return ActionResult(woken.status, woken.summary, woken.id)
        if woken is not None and woken.status == OperationStatus.FAILED:
            summary = f"{woken.summary}; recovery not attempted: no node woke"
            return ActionResult(OperationStatus.FAILED, summary, woken.id)
        with factory() as session:
            recovery = start_recovery(
                session,
                context.cluster_id,
                context.actor,
                settings.recovery_timeout,
                check_idle=False,
                node_ids=node_ids,
            )
        recovery.closes_outages = outage_id is None
        link_operation(context, "recovery_operation_id", recovery.operation_id)
        recovered = await run_recovery(factory, settings, recovery)
        return self._combine(woken, recovered)

    @staticmethod
    def _combine(woken: Operation | None, recovered: Operation) -> ActionResult:
        extra = {"recovery_operation_id": recovered.id}
        if woken is None:  # every node that was up before still answered: nothing to wake
            summary = f"no node to wake; recovery #{recovered.id}: {recovered.summary}"
            return ActionResult(recovered.status, summary, recovered.id, extra)
        if woken.status == OperationStatus.SUCCEEDED:
            status = recovered.status
        elif recovered.status in (OperationStatus.SUCCEEDED, OperationStatus.PARTIAL):
            status = OperationStatus.PARTIAL
        else:
            status = recovered.status
        return ActionResult(
            status, f"{woken.summary}; recovery #{recovered.id}: {recovered.summary}", woken.id, extra
        )


class ShutdownClusterAction(ClusterActionHandler):
    """``graceful_shutdown``: drain, stop and power off in order (mko.cluster); stops at a safe point."""

    action = ClusterAction.GRACEFUL_SHUTDOWN
    stops_at_safe_point = True
    force: ClassVar[bool] = False

    async def run(self, context: ActionContext) -> ActionResult:
        """Plan now (the drain host must answer now), then run; ``context.stop`` ends it safely.

        Nodes another UPS still carries (their feeds) are not this UPS's loss: a cluster rule does
        nothing while every node is carried, and a fed-nodes rule shuts down only the nodes left
        without mains (mko.inventory.feeds)."""
        settings, factory = context.settings, context.session_factory
        check, nodes = feed_check(context)
        carried = check.describe({n.id: n.hostname for n in nodes})
        if nodes and not check.losing:  # (a cluster without nodes: the plan says so)
            why = "every node is still on mains" if not check.carried else carried
            if context.fed_only and not check.carried:
                why = f"UPS {context.ups_name} feeds no node of this cluster"
            return ActionResult(OperationStatus.SUCCEEDED, f"nothing to shut down: {why}")
        node_ids = check.losing if context.fed_only else None
        if carried and not context.fed_only:
            carried += ": shut down with the cluster all the same (a cluster rule; --fed-only leaves them up)"
        with factory() as session:
            # For this UPS: an outage (the nodes up now are the ones its restore wakes), and the end a
            # NUT primary gives it (the UPS's power cycle, mko's own host) where configured.
            plan = await plan_shutdown(
                session,
                settings,
                context.cluster_id,
                force=self.force,
                ups_id=context.ups_id,
                node_ids=node_ids,
            )
            if carried:
                plan.notes.append(carried)
            # No refusal for a shutdown already recorded as running: power is running out, and a stale
            # record (a killed CLI) must never keep the cluster up.
            prepared = start_shutdown(
                session,
                plan,
                context.actor,
                check_idle=False,
                event=context.event.value,
                event_id=context.event_id or None,
                reason=f"rule {context.rule_id} ({context.rule_name}) on {context.event.value}"
                f" of UPS {context.ups_name}" + (f": {context.why}" if context.why else ""),
            )
        link_operation(context, "operation_id", prepared.operation_id)
        # The preflight runs beside the first steps; its findings are recorded, never waited on for long.
        operation = await run_shutdown(factory, settings, prepared, abort=context.stop, checks=True)
        return ActionResult(operation.status, operation.summary, operation.id)


class ForceShutdownClusterAction(ShutdownClusterAction):
    """``force_shutdown``: the same order without the drains (when there is no time to evict pods)."""

    action = ClusterAction.FORCE_SHUTDOWN
    force = True


# The actions built in this version; rules asking for another are refused at creation.
ACTIONS: dict[ClusterAction, ClusterActionHandler] = {
    ClusterAction.WAKE_ON_LAN: WakeClusterAction(),
    ClusterAction.GRACEFUL_SHUTDOWN: ShutdownClusterAction(),
    ClusterAction.FORCE_SHUTDOWN: ForceShutdownClusterAction(),
}
