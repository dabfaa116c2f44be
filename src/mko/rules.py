"""Power rules: a UPS event becomes a cluster action, with delay, priority, cancellation, no conflicts.

Rule CRUD (create/list/get/delete/enable/disable) is the service behind ``mko ups create-rule …`` and
``/api/ups/rules``. :class:`RuleEngine` executes rules as the monitor reports events. Its semantics:

* **Once per event.** Events are edge-triggered (:mod:`mko.ups.events`); each stored event is handed to
  the engine once, and each enabled rule matching it runs at most once for it. A rule whose previous
  execution is still waiting or running is not started again (recorded as skipped), nor is a second
  rule doing the same action on the same cluster for the same event.
* **Delay and cancellation.** A rule with ``action_delay`` waits that long after the event. If the
  opposite event arrives meanwhile, the waiting execution is cancelled and recorded as such
  (``power_restored`` cancels waiting power_loss / low_battery / critical_battery actions — power back
  within 60 s means no shutdown; ``power_loss`` cancels waiting power_restored actions; comm_lost and
  comm_restored cancel each other). ``ups_shutdown`` (FSD) is never cancelled: NUT's forced shutdown is
  irrevocable. A rule disabled or deleted while it waits does not fire. An action already running is
  not cancelled by an event; only a conflicting action supersedes it (next point).
* **No two actions on one cluster at once.** The engine holds one slot per cluster. An action of the
  kind already running there (a wake while a wake runs) is skipped; an action of another kind (a wake
  while a shutdown runs, or the reverse) supersedes it: the running action is asked to stop — a
  shutdown finishes the step in progress and starts no other (never a half-stopped control plane);
  other actions are cancelled — and the new one starts once it has ended. The newest event is the
  truth about the power, so its action wins. This is the **power race**: power returns while the
  cluster shuts down → the shutdown stops at a safe point → the wake and the recovery run.
* **Priority.** Rules matching one event run in priority order, lower first; rules of equal priority
  start together, the next priority starts when they have all ended. Delays count from the event.
* **Records.** Every execution is an Operation (kind ``power_rule``, actor ``rule:<id>``, source
  ``ups:<name>``) holding the triggering event; the action's own operation (e.g. the wake with one
  result per node) is linked from its step. Counters: ``last_triggered_at`` when an event matches,
  ``execution_count`` when the action starts, then ``success_count`` (the action fully succeeded: for
  a wake, every node answered) or ``failure_count`` (partial, failed, superseded or interrupted).
* **Restart.** Executions waiting when mko stopped are closed as cancelled; those a killed process
  left open are closed at the next start once that process is gone (mko.operations.ownership): waiting ones as
  cancelled, running ones as interrupted. The monitor takes a fresh baseline and old events are never
  replayed.

Actions are a small registry (:data:`ACTIONS`): ``wake_on_lan`` (then, when the rule's
``recover_after_wake`` is set — the default — the cluster recovery of mko.shutdown: ``microk8s start``
everywhere, every node Ready, uncordon), ``graceful_shutdown`` and ``force_shutdown`` (mko.shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mko import inventory, outages, shutdown, wake
from mko.operations import ownership
from mko.operations.identity import current_instance
from mko.operations.records import Actor
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.ha import UpsState
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.models.outages import OutagePhase
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import UPS, PowerEvent, UpsEvent
from mko.platform.errors import InputError, MkoError, NotFoundError
from mko.platform.settings import Settings
from mko.ups.schemas import RuleCreate
from mko.ups.status import UpsReading

__all__ = [
    "ACTIONS",
    "CANCELS",
    "RULE_OPERATION_KIND",
    "ActionContext",
    "ActionResult",
    "ClusterActionHandler",
    "RuleEngine",
    "ShutdownClusterAction",
    "StopSignal",
    "WakeClusterAction",
    "create_rule",
    "delete_rule",
    "get_rule",
    "list_rules",
    "low_battery_thresholds",
    "set_rule_enabled",
]

log = logging.getLogger("mko.rules")

RULE_OPERATION_KIND = "power_rule"
STOPPED_WAITING = "cancelled: mko stopped before the action was taken"
MAX_DELAY = 86_400
MAX_PRIORITY = 10_000
# A power_restored rule acts once mains has held this long (unless created with another stable_for):
# mains that flickers back for a few seconds after a long cut must not wake a cluster into the next one.
DEFAULT_STABLE_FOR = 10

# event -> the events whose WAITING executions it cancels.
CANCELS: dict[PowerEvent, frozenset[PowerEvent]] = {
    PowerEvent.POWER_RESTORED: frozenset(
        {PowerEvent.POWER_LOSS, PowerEvent.LOW_BATTERY, PowerEvent.CRITICAL_BATTERY, PowerEvent.RUNTIME_LOW}
    ),
    PowerEvent.POWER_LOSS: frozenset({PowerEvent.POWER_RESTORED}),
    PowerEvent.COMM_RESTORED: frozenset({PowerEvent.COMM_LOST}),
    PowerEvent.COMM_LOST: frozenset({PowerEvent.COMM_RESTORED}),
}


# ------------------------------------------------------------------------------------ actions


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
    resumed_from: str | None = None  # the instance this execution was taken over from (mko.failover)
    instance: str = ""  # the instance acting now
    why: str = ""  # the triggering event's message, for the records (e.g. "mains returned while …")


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
    """``wake_on_lan``: wake every node and verify each answers (mko.wake), then recover the cluster."""

    action = ClusterAction.WAKE_ON_LAN
    repeatable = True

    async def resume(self, context: ActionContext) -> ActionResult:
        """After a failover: finish the wake the dead instance began (same operation), then recover."""
        from mko.failover import resume_wake
        from mko.operations.interrupted import fail_interrupted

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
        woken = await self._wake(context, None)
        assert woken is not None
        return await self._recover(context, woken)

    async def _wake(self, context: ActionContext, leave: dict[int, str] | None) -> Operation | None:
        settings, factory = context.settings, context.session_factory
        schedule = wake.make_schedule(settings, wait=True, timeout=settings.rule_wake_timeout)
        with factory() as session:
            prepared = wake.start_wake(
                session,
                target_type="cluster",
                target_id=context.cluster_id,
                schedule=schedule,
                actor=context.actor,
                leave=leave,
            )
        link_operation(context, "operation_id", prepared.operation_id)
        return await wake.run_wake(factory, settings, prepared)

    async def _restore(self, context: ActionContext, outage_id: int) -> ActionResult:
        """The outage's restore: wake who was up before and is down now, recover them, close the outage."""
        settings, factory = context.settings, context.session_factory
        with factory() as session:
            outage = outages.get_outage(session, outage_id)
            nodes = inventory.list_nodes(session, context.cluster_id)
            for node in nodes:
                session.expunge(node)
            up_before = set(outage.nodes_up)
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
            leave = {n.id: "was off before the outage: left off" for n in nodes if n.id not in up_before}
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
            recovery = shutdown.start_recovery(
                session,
                context.cluster_id,
                context.actor,
                settings.recovery_timeout,
                check_idle=False,
                node_ids=node_ids,
            )
        recovery.closes_outages = outage_id is None
        link_operation(context, "recovery_operation_id", recovery.operation_id)
        recovered = await shutdown.run_recovery(factory, settings, recovery)
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
    """``graceful_shutdown``: drain, stop and power off in order (mko.shutdown); stops at a safe point."""

    action = ClusterAction.GRACEFUL_SHUTDOWN
    stops_at_safe_point = True
    force: ClassVar[bool] = False

    async def run(self, context: ActionContext) -> ActionResult:
        """Plan now (the drain host must answer now), then run; ``context.stop`` ends it safely."""
        settings, factory = context.settings, context.session_factory
        with factory() as session:
            # For this UPS: an outage (the nodes up now are the ones its restore wakes), and the end a
            # NUT primary gives it (the UPS's power cycle, mko's own host) where configured.
            plan = await shutdown.plan_shutdown(
                session, settings, context.cluster_id, force=self.force, ups_id=context.ups_id
            )
            # No refusal for a shutdown already recorded as running: power is running out, and a stale
            # record (a killed CLI) must never keep the cluster up.
            prepared = shutdown.start_shutdown(
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
        operation = await shutdown.run_shutdown(factory, settings, prepared, abort=context.stop)
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


def _missing_action_message(action: ClusterAction) -> str:
    return (
        f"{action.value} is not available in this version of mko, so a rule could never carry it out;"
        f" available: {', '.join(a.value for a in ACTIONS)}"
    )


# ------------------------------------------------------------------------------------ rule CRUD


def create_rule(
    session: Session, data: RuleCreate, actions: Mapping[ClusterAction, ClusterActionHandler] | None = None
) -> PowerRule:
    """Add a rule after checking every field; nothing is stored when one is wrong."""
    available = ACTIONS if actions is None else actions
    if session.get(UPS, data.ups_id) is None:
        raise InputError("ups_id", f"UPS {data.ups_id} does not exist")
    if data.cluster_action not in available:
        raise InputError("cluster_action", _missing_action_message(data.cluster_action))
    try:
        inventory.get_cluster(session, data.cluster_id)
    except NotFoundError:
        raise InputError("cluster_id", f"cluster {data.cluster_id} does not exist") from None
    if data.battery_threshold is not None:
        if data.power_event != PowerEvent.LOW_BATTERY:
            raise InputError(
                "battery_threshold", "a battery threshold applies to power_event low_battery only"
            )
        if not 1 <= data.battery_threshold <= 100:
            raise InputError("battery_threshold", f"{data.battery_threshold} is out of range (1-100 %)")
    if not 0 <= data.action_delay <= MAX_DELAY:
        raise InputError("action_delay", f"{data.action_delay} is out of range (0-{MAX_DELAY} seconds)")
    stable_for = _restore_waits(data)
    if not 0 <= data.priority <= MAX_PRIORITY:
        raise InputError("priority", f"{data.priority} is out of range (0-{MAX_PRIORITY})")
    name = (data.name or "").strip() or f"{data.power_event.value} → {data.cluster_action.value}"
    rule = PowerRule(
        name=name,
        ups_id=data.ups_id,
        cluster_id=data.cluster_id,
        power_event=data.power_event,
        cluster_action=data.cluster_action,
        battery_threshold=data.battery_threshold,
        action_delay=data.action_delay,
        priority=data.priority,
        enabled=data.enabled,
        recover_after_wake=data.recover_after_wake,
        min_charge=data.min_charge,
        stable_for=stable_for,
        execution_count=0,
        success_count=0,
        failure_count=0,
    )
    session.add(rule)
    session.commit()
    log.info("power rule %s created: %s", rule.id, name)
    return rule


def _restore_waits(data: RuleCreate) -> int:
    """Check min_charge and stable_for (power_restored rules only); return stable_for with its default."""
    restore = data.power_event == PowerEvent.POWER_RESTORED
    if data.min_charge is not None:
        if not restore:
            raise InputError("min_charge", "a minimum charge applies to power_event power_restored only")
        if not 1 <= data.min_charge <= 100:
            raise InputError("min_charge", f"{data.min_charge} is out of range (1-100 %)")
    stable_for = data.stable_for
    if stable_for is None:
        return DEFAULT_STABLE_FOR if restore else 0
    if stable_for and not restore:
        raise InputError("stable_for", "waiting for mains to hold applies to power_event power_restored only")
    if not 0 <= stable_for <= MAX_DELAY:
        raise InputError("stable_for", f"{stable_for} is out of range (0-{MAX_DELAY} seconds)")
    return stable_for


def get_rule(session: Session, rule_id: int) -> PowerRule:
    """The rule with this id, or NotFoundError."""
    rule = session.get(PowerRule, rule_id)
    if rule is None:
        raise NotFoundError("power rule", rule_id)
    return rule


def list_rules(
    session: Session, *, ups_id: int | None = None, cluster_id: int | None = None
) -> list[PowerRule]:
    """Rules by UPS, then priority, then id."""
    query = select(PowerRule).order_by(PowerRule.ups_id, PowerRule.priority, PowerRule.id)
    if ups_id is not None:
        query = query.where(PowerRule.ups_id == ups_id)
    if cluster_id is not None:
        query = query.where(PowerRule.cluster_id == cluster_id)
    return list(session.scalars(query))


def delete_rule(session: Session, rule_id: int) -> None:
    """Remove a rule; an execution of it that is still waiting will not fire."""
    session.delete(get_rule(session, rule_id))
    session.commit()


def set_rule_enabled(session: Session, rule_id: int, enabled: bool) -> PowerRule:
    """Enable or disable a rule (a disabled rule's waiting execution does not fire)."""
    rule = get_rule(session, rule_id)
    rule.enabled = enabled
    session.commit()
    return rule


def low_battery_thresholds(session: Session) -> dict[int, set[int]]:
    """The thresholds of enabled low_battery rules, per UPS id (what the event detector watches)."""
    rows = session.execute(
        select(PowerRule.ups_id, PowerRule.battery_threshold).where(
            PowerRule.enabled.is_(True),
            PowerRule.power_event == PowerEvent.LOW_BATTERY,
            PowerRule.battery_threshold.is_not(None),
        )
    )
    thresholds: dict[int, set[int]] = {}
    for ups_id, threshold in rows:
        if threshold is not None:
            thresholds.setdefault(ups_id, set()).add(threshold)
    return thresholds


def runtime_need(settings: Settings, measured: float | None) -> float:
    """Seconds of battery a cluster's shutdown needs: its last measured shutdown × factor + margin."""
    duration = measured if measured is not None else settings.runtime_low_unmeasured
    return duration * settings.runtime_low_factor + settings.runtime_low_margin


def runtime_needs(session: Session, settings: Settings) -> dict[int, dict[int, float]]:
    """Per UPS id, the clusters of enabled runtime_low rules with the runtime each needs to shut down."""
    rows = session.execute(
        select(PowerRule.ups_id, PowerRule.cluster_id).where(
            PowerRule.enabled.is_(True), PowerRule.power_event == PowerEvent.RUNTIME_LOW
        )
    )
    needs: dict[int, dict[int, float]] = {}
    for ups_id, cluster_id in sorted({(row[0], row[1]) for row in rows}):
        needs.setdefault(ups_id, {})[cluster_id] = runtime_need(
            settings, shutdown.last_duration(session, cluster_id)
        )
    return needs


# ------------------------------------------------------------------------------------ engine

WAITING, RUNNING, DONE = "waiting", "running", "done"


@dataclass(eq=False)
class Execution:
    """One rule's response to one event, from the event to its outcome."""

    rule_id: int
    rule_name: str
    ups_id: int
    ups_name: str
    cluster_id: int
    action: ClusterAction
    event: PowerEvent
    event_id: int
    delay: int
    priority: int
    operation_id: int
    due: float  # loop time at which the delay ends
    state: str = WAITING
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    superseded_by: str | None = None
    stop: StopSignal = field(default_factory=StopSignal)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    resumed_from: str | None = None  # taken over from this (dead) instance by a failover
    interrupted: BaseException | None = None  # a cancellation to re-raise once the result is recorded
    # power_restored rules: wait for this charge (percent) and for mains to hold this long (seconds).
    min_charge: int | None = None
    stable_for: int = 0
    mains_since: float = 0.0  # loop time from which mains counts as held: the event
    waiting_for: str = ""  # "waiting: charge 34 % of 50 %"
    why: str = ""  # the event's message
    hurry: asyncio.Event = field(default_factory=asyncio.Event)  # set by FSD: the delay ends now

    @classmethod
    def of(
        cls,
        rule: PowerRule,
        event: UpsEvent,
        ups_name: str,
        operation_id: int,
        now: float,
        *,
        forced: bool = False,
    ) -> Execution:
        """The rule's response to the event (``forced``: FSD's shutdown now, no drains, no delay)."""
        delay = 0 if forced else rule.action_delay
        return cls(
            rule_id=rule.id,
            rule_name=rule.name,
            ups_id=event.ups_id,
            ups_name=ups_name,
            cluster_id=rule.cluster_id,
            action=ClusterAction.FORCE_SHUTDOWN if forced else rule.cluster_action,
            event=event.event,
            event_id=event.id,
            delay=delay,
            priority=0 if forced else rule.priority,
            operation_id=operation_id,
            due=now + delay,
            min_charge=rule.min_charge,
            stable_for=rule.stable_for,
            mains_since=now,
            why=f"FSD: {event.message}" if forced else event.message,
        )

    def describe(self) -> dict[str, Any]:
        """For status displays."""
        return {
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "cluster_id": self.cluster_id,
            "action": self.action.value,
            "event": self.event.value,
            "event_id": self.event_id,
            "state": self.state,
            "operation_id": self.operation_id,
            "waiting_for": self.waiting_for,
        }


class RuleEngine:
    """Runs power rules for stored events; one engine per monitor (see the module docstring)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        actions: Mapping[ClusterAction, ClusterActionHandler] | None = None,
        readings: Callable[[int], UpsReading | None] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.actions = dict(ACTIONS if actions is None else actions)
        # The latest reading of a UPS (the monitor's; else the state it persisted), for restore waits.
        self.readings = readings or self._persisted_reading
        self._active: dict[int, Execution] = {}  # by rule id: waiting or running
        self._slots: dict[int, Execution] = {}  # by cluster id: the action running there
        self._batches: set[asyncio.Task[None]] = set()
        self._closed = False
        # Leadership lost (mko.ha): executions end without recording, for the next leader to carry on.
        self._handover = False

    # -------------------------------------------------------------- life cycle

    def recover(self) -> int:
        """Close the operations whose owner is gone (rule executions of a killed mko among them).

        A rule execution still waiting its delay is closed as cancelled, a running one as interrupted
        (mko.operations.ownership); one whose process still runs, e.g. another instance's, is left alone.
        """
        with self.session_factory() as session:
            closed = ownership.close_orphaned(session)
        return len(closed)

    async def close(self, *, handover: bool = False) -> None:
        """Cancel waiting and running executions (each records why) and wait for them to end.

        ``handover``: this instance lost the leadership; the executions are left open in the database
        for the new leader to take over (mko.failover) instead of being closed as cancelled.
        """
        self._closed = True
        self._handover = handover
        batches = list(self._batches)
        for task in batches:
            task.cancel()
        for execution in list(self._active.values()):
            if execution.task is not None:
                execution.task.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
        tasks = [e.task for e in self._active.values() if e.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for execution in list(self._active.values()):
            if execution.state == WAITING:
                execution.cancel_reason = execution.cancel_reason or STOPPED_WAITING
                self._close_cancelled(execution)

    def pending(self) -> list[dict[str, Any]]:
        """Executions waiting or running now."""
        return [execution.describe() for execution in list(self._active.values())]

    async def idle(self) -> None:
        """Wait until no execution is waiting or running (tests and benchmarks)."""
        while self._batches:
            await asyncio.gather(*list(self._batches), return_exceptions=True)

    # -------------------------------------------------------------- events

    async def handle(self, event: UpsEvent, ups_name: str) -> list[int]:
        """React to one stored event: cancel what it cancels, start the matching rules; return op ids."""
        if self._closed:
            return []
        loop = asyncio.get_running_loop()
        now = loop.time()
        executions: list[Execution] = []
        with self.session_factory() as session:
            # Exactly once: the event is claimed in the same transaction that records its executions, so
            # of several instances (or a leader and its successor) only one ever acts on it.
            claimed_event = session.execute(
                update(UpsEvent)
                .where(UpsEvent.id == event.id, UpsEvent.handled_at.is_(None))
                .values(handled_at=utcnow(), handled_by=current_instance() or "")
            )
            if getattr(claimed_event, "rowcount", 0) != 1:
                session.rollback()
                log.info("event %s was already handled; not acting on it again", event.id)
                return []
            rules = [
                rule
                for rule in session.scalars(
                    select(PowerRule)
                    .where(
                        PowerRule.ups_id == event.ups_id,
                        PowerRule.power_event == event.event,
                        PowerRule.enabled.is_(True),
                    )
                    .order_by(PowerRule.priority, PowerRule.id)
                )
                if _concerns(rule, event)
            ]
            claimed: dict[tuple[int, ClusterAction], int] = {}
            for rule in rules:
                rule.last_triggered_at = event.occurred_at
                active = self._active.get(rule.id)
                operation = self._new_operation(session, rule, ups_name, event)
                twin = claimed.get((rule.cluster_id, rule.cluster_action))
                if active is not None or twin is not None:
                    why = (
                        f"this rule is still {active.state} for {active.event.value}"
                        f" (operation {active.operation_id})"
                        if active is not None
                        else f"rule {twin} already does {rule.cluster_action.value} on cluster"
                        f" {rule.cluster_id} for this event"
                    )
                    _finish(session, operation, OperationStatus.CANCELLED, f"skipped: {why}")
                    continue
                claimed[(rule.cluster_id, rule.cluster_action)] = rule.id
                execution = Execution.of(rule, event, ups_name, operation.id, now)
                if rule.action_delay:
                    _step(
                        session,
                        operation,
                        f"wait {rule.action_delay}s",
                        OperationStatus.RUNNING,
                        f"acting at {_clock(event.occurred_at, rule.action_delay)} unless cancelled",
                    )
                self._active[rule.id] = execution
                executions.append(execution)
            session.commit()
            forced = self._forced_shutdowns(session, event, ups_name, executions)
            if rules or forced:
                ownership.keep_alive(session)
            for execution in executions + forced:
                self._notify_triggered(session, execution)
        self._cancel_opposites(event)
        for batch in (executions, forced):
            if batch:
                task = asyncio.create_task(self._run_batch(batch), name=f"mko-rules-event-{event.id}")
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
        return [e.operation_id for e in executions + forced]

    def _forced_shutdowns(
        self, session: Session, event: UpsEvent, ups_name: str, started: list[Execution]
    ) -> list[Execution]:
        """FSD set by the UPS's primary means "shut down now" for every cluster this UPS's rules shut down.

        Waiting shutdowns of the UPS stop waiting; a cluster with shutdown rules on the UPS that is
        neither shutting down nor down gets its first shutdown rule run now, without drains (the primary
        cuts the power once its secondaries logged out, or after HOSTSYNC). Not after mko's own power
        cycle, whose FSD is the UPS confirming mko's command.
        """
        if event.event != PowerEvent.UPS_SHUTDOWN or "FSD" not in (event.status_after or "").split():
            return []
        open_ = outages.find_open(session, ups_id=event.ups_id)
        if any(o.power_cycle.get("outcome") == "sent" for o in open_):
            log.info("FSD on UPS %s follows mko's own power cycle: nothing more to do", ups_name)
            return []
        covered = {o.cluster_id for o in open_ if o.phase == OutagePhase.DOWN}
        for execution in [*self._active.values(), *self._slots.values(), *started]:
            if execution.ups_id == event.ups_id and execution.action in shutdown.SHUTDOWN_ACTIONS:
                covered.add(execution.cluster_id)
                execution.hurry.set()
        now = asyncio.get_running_loop().time()
        forced: list[Execution] = []
        for rule in session.scalars(
            select(PowerRule)
            .where(
                PowerRule.ups_id == event.ups_id,
                PowerRule.enabled.is_(True),
                PowerRule.cluster_action.in_(shutdown.SHUTDOWN_ACTIONS),
            )
            .order_by(PowerRule.priority, PowerRule.id)
        ):
            if rule.cluster_id in covered or rule.id in self._active:
                continue
            covered.add(rule.cluster_id)
            operation = self._new_operation(session, rule, ups_name, event)
            operation.summary = f"FSD set on the UPS: {rule.name}: force_shutdown now (no drains)"
            execution = Execution.of(rule, event, ups_name, operation.id, now, forced=True)
            self._active[rule.id] = execution
            forced.append(execution)
            log.warning(
                "FSD on UPS %s: shutting cluster %s down now (rule %s)", ups_name, rule.cluster_id, rule.id
            )
        session.commit()
        return forced

    def shutting_down(self, ups_id: int) -> bool:
        """Whether a shutdown for this UPS waits or runs (the monitor keeps its LOGIN until it ends)."""
        return any(
            e.ups_id == ups_id and e.action in shutdown.SHUTDOWN_ACTIONS
            for e in [*self._active.values(), *self._slots.values()]
        )

    def _cancel_opposites(self, event: UpsEvent) -> None:
        cancels = CANCELS.get(event.event, frozenset())
        for execution in list(self._active.values()):
            if execution.ups_id == event.ups_id and execution.state == WAITING and execution.event in cancels:
                self._cancel_waiting(
                    execution,
                    f"cancelled: {event.event.value} (event {event.id}) came before the action was taken",
                )

    def _cancel_waiting(self, execution: Execution, reason: str) -> None:
        execution.cancel_reason = reason
        if execution.task is not None:
            execution.task.cancel()
        else:  # still queued behind a lower priority number: close it here
            self._close_cancelled(execution)

    def _release(self, execution: Execution) -> None:
        # By identity: a newer execution of the same rule may already be registered.
        if self._active.get(execution.rule_id) is execution:
            del self._active[execution.rule_id]

    def _close_cancelled(self, execution: Execution) -> None:
        execution.state = DONE
        self._release(execution)
        if self._handover:
            execution.done.set()
            return
        with self.session_factory() as session:
            operation = session.get_one(Operation, execution.operation_id)
            _finish(session, operation, OperationStatus.CANCELLED, execution.cancel_reason or "cancelled")
        log.info("rule %s: %s", execution.rule_id, execution.cancel_reason)
        self._notify_finished(execution, OperationStatus.CANCELLED, execution.cancel_reason or "cancelled")
        execution.done.set()

    # Notifications (mko.notify, by each rule's flags) never block or break an execution. Imported
    # lazily: apprise takes a fifth of a second to load, which CLI commands should not pay.

    def _notify_triggered(self, session: Session, execution: Execution) -> None:
        try:
            from mko.notify.messages import rule_triggered

            rule = session.get(PowerRule, execution.rule_id)
            if rule is not None:
                rule_triggered(self.settings, rule, event=execution.event.value)
        except Exception:
            log.exception("rule %s: could not notify its trigger", execution.rule_id)

    def _notify_finished(
        self, execution: Execution, status: OperationStatus, summary: str, action_operation: int | None = None
    ) -> None:
        try:
            from mko.notify.messages import rule_finished

            with self.session_factory() as session:
                rule = session.get(PowerRule, execution.rule_id)
                if rule is not None:
                    rule_finished(
                        self.settings,
                        rule,
                        event=execution.event.value,
                        outcome=status,
                        summary=summary,
                        operation_id=action_operation or execution.operation_id,
                    )
        except Exception:
            log.exception("rule %s: could not notify its outcome", execution.rule_id)

    async def _run_batch(self, executions: list[Execution]) -> None:
        for _, group in itertools.groupby(executions, key=lambda e: e.priority):
            tasks = []
            for execution in group:
                if execution.state != WAITING:  # cancelled while an earlier priority ran
                    continue
                execution.task = asyncio.create_task(
                    self._execute(execution), name=f"mko-rule-{execution.rule_id}"
                )
                tasks.append(execution.task)
            if tasks:
                await asyncio.wait(tasks)
            for execution in executions:
                # A task cancelled before its first step never ran its own clean-up.
                if execution.task is not None and execution.task.done() and execution.state == WAITING:
                    self._close_cancelled(execution)

    async def _execute(self, execution: Execution) -> None:
        try:
            await self._wait_delay(execution)
            await self._wait_power(execution)
        except asyncio.CancelledError:
            if execution.cancel_reason is None:
                execution.cancel_reason = STOPPED_WAITING
                self._close_cancelled(execution)
                raise
            self._close_cancelled(execution)
            return
        # A running execution taken over from a dead instance is carried on (or failed) regardless.
        gone = None if execution.resumed_from is not None else self._rule_gone(execution.rule_id)
        if gone is not None:
            execution.cancel_reason = f"cancelled: {gone} before the action was taken"
            self._close_cancelled(execution)
            return
        try:
            took = await self._take_slot(execution)
        except asyncio.CancelledError:  # mko stopped while this waited for a superseded action to end
            execution.cancel_reason = execution.cancel_reason or STOPPED_WAITING
            self._close_cancelled(execution)
            raise
        if not took:
            return
        try:
            await self._act(execution)
        finally:
            if self._slots.get(execution.cluster_id) is execution:
                del self._slots[execution.cluster_id]
            self._release(execution)
            execution.state = DONE
            execution.done.set()

    async def _wait_delay(self, execution: Execution) -> None:
        pause = execution.due - asyncio.get_running_loop().time()
        if pause > 0 and not execution.hurry.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await execution.hurry.wait()  # FSD: no more waiting

    async def _wait_power(self, execution: Execution) -> None:
        """A restore rule waits (still cancellable by power_loss) for charge and for mains to hold."""
        if execution.min_charge is None and not execution.stable_for:
            return
        loop = asyncio.get_running_loop()
        shown = ""
        while waiting := self._waiting_for(execution, loop.time()):
            if waiting != shown:
                self._show_wait(execution, waiting, OperationStatus.RUNNING)
                execution.waiting_for = shown = waiting
            await asyncio.sleep(min(1.0, self.settings.ups_poll_interval))
        if shown:
            reading = self.readings(execution.ups_id)
            charge = reading.charge if reading is not None else None
            held = loop.time() - execution.mains_since
            done = f"mains held {held:.0f} s" + (f", charge {charge:g} %" if charge is not None else "")
            self._show_wait(execution, f"ready: {done}", OperationStatus.SUCCEEDED)
        execution.waiting_for = ""

    def _waiting_for(self, execution: Execution, now: float) -> str:
        """``waiting: charge 34 % of 50 %`` while a restore rule must wait; empty when it may act."""
        parts = []
        held = now - execution.mains_since
        if held < execution.stable_for:
            parts.append(f"mains held {held:.0f} s of {execution.stable_for} s")
        if execution.min_charge is not None:
            reading = self.readings(execution.ups_id)
            charge = reading.charge if reading is not None else None
            # A UPS that does not report its charge cannot be waited for: act (the step says so).
            if charge is not None and charge < execution.min_charge:
                parts.append(f"charge {charge:g} % of {execution.min_charge} %")
        return "waiting: " + ", ".join(parts) if parts else ""

    def _show_wait(self, execution: Execution, message: str, status: OperationStatus) -> None:
        with self.session_factory() as session:
            operation = session.get_one(Operation, execution.operation_id)
            step = next((s for s in operation.steps if s.name == "wait for power"), None)
            if step is None:
                _step(session, operation, "wait for power", status, message)
                return
            step.message, step.status = message, status
            step.finished_at = None if status == OperationStatus.RUNNING else utcnow()
            session.commit()

    def _persisted_reading(self, ups_id: int) -> UpsReading | None:
        """The UPS as the monitor last persisted it (ups_state), when no live reading is at hand."""
        with self.session_factory() as session:
            row = session.get(UpsState, ups_id)
            if row is None or not row.status or not row.state.get("at"):
                return None
            variables = dict(row.state.get("variables") or {}) | {"ups.status": row.status}
            return UpsReading.from_variables(variables, datetime.fromisoformat(row.state["at"]))

    def _rule_gone(self, rule_id: int) -> str | None:
        with self.session_factory() as session:
            rule = session.get(PowerRule, rule_id)
            if rule is None:
                return "the rule was deleted"
            return None if rule.enabled else "the rule was disabled"

    async def _take_slot(self, execution: Execution) -> bool:
        """Claim the cluster: skip when the same action runs there, supersede another action."""
        execution.state = RUNNING
        while (holder := self._slots.get(execution.cluster_id)) is not None:
            if holder.action == execution.action:
                execution.state = DONE
                self._release(execution)
                with self.session_factory() as session:
                    operation = session.get_one(Operation, execution.operation_id)
                    _finish(
                        session,
                        operation,
                        OperationStatus.CANCELLED,
                        f"skipped: {holder.action.value} of cluster {holder.cluster_id} is already running"
                        f" (rule {holder.rule_id}, operation {holder.operation_id})",
                    )
                execution.done.set()
                return False
            why = f"{execution.action.value} on {execution.event.value}"
            holder.superseded_by = f"superseded by rule {execution.rule_id} ({why})"
            log.warning(
                "rule %s: %s on cluster %s supersedes running %s of rule %s",
                execution.rule_id,
                execution.action.value,
                execution.cluster_id,
                holder.action.value,
                holder.rule_id,
            )
            holder.stop.request(holder.superseded_by)
            handler = self.actions.get(holder.action)
            if holder.task is not None and not (handler is not None and handler.stops_at_safe_point):
                holder.task.cancel()
            # A shutdown finishes the step it is in (never a half-stopped control plane), then ends.
            await holder.done.wait()
        self._slots[execution.cluster_id] = execution
        return True

    async def _act(self, execution: Execution) -> None:
        actor = Actor(name=f"rule:{execution.rule_id}", source=f"ups:{execution.ups_name}")
        if execution.resumed_from is not None:
            await self._resume(execution, actor)
            return
        with self.session_factory() as session:
            session.execute(
                update(PowerRule)
                .where(PowerRule.id == execution.rule_id)
                .values(execution_count=PowerRule.execution_count + 1)
            )
            operation = session.get_one(Operation, execution.operation_id)
            for step in operation.steps:
                if step.status == OperationStatus.RUNNING:
                    step.status, step.finished_at = OperationStatus.SUCCEEDED, utcnow()
            operation.status, operation.started_at = OperationStatus.RUNNING, utcnow()
            session.commit()
            _step(session, operation, execution.action.value, OperationStatus.RUNNING, "")
        log.info(
            "rule %s (%s): %s on cluster %s for %s (event %s)",
            execution.rule_id,
            execution.rule_name,
            execution.action.value,
            execution.cluster_id,
            execution.event.value,
            execution.event_id,
        )
        self._record_and_reraise(execution, await self._carry_out(execution, actor))

    async def _resume(self, execution: Execution, actor: Actor) -> None:
        """An execution a dead instance left running: carry a repeatable action on, fail any other."""
        handler = self.actions.get(execution.action)
        previous = execution.resumed_from or "?"
        repeatable = handler is not None and handler.repeatable
        log.warning(
            "rule %s: %s on cluster %s was running on %s; %s",
            execution.rule_id,
            execution.action.value,
            execution.cluster_id,
            previous,
            "resuming it" if repeatable else "not repeating it",
        )
        result = await self._carry_out(execution, actor, resumed_from=previous)
        if repeatable:
            resumed = {"resumed": {"from": previous, "by": current_instance() or ""}}
            extra = {**result.extra, **resumed}
            result = ActionResult(result.status, result.summary, result.operation_id, extra)
        self._record_and_reraise(execution, result)

    async def _carry_out(
        self, execution: Execution, actor: Actor, *, resumed_from: str | None = None
    ) -> ActionResult:
        """Run (or, for ``resumed_from``, resume) the execution's action; its result, whatever happened.

        A cancellation is the result "cancelled" (kept on ``execution.interrupted`` to re-raise after
        recording), except on a handover, where the execution stays running for the next leader.
        """
        handler = self.actions.get(execution.action)
        if handler is None:
            return ActionResult(OperationStatus.FAILED, _missing_action_message(execution.action))
        context = ActionContext(
            rule_id=execution.rule_id,
            rule_name=execution.rule_name,
            cluster_id=execution.cluster_id,
            ups_id=execution.ups_id,
            ups_name=execution.ups_name,
            event=execution.event,
            event_id=execution.event_id,
            actor=actor,
            session_factory=self.session_factory,
            settings=self.settings,
            stop=execution.stop,
            operation_id=execution.operation_id,
            resumed_from=resumed_from,
            instance=current_instance() or "",
            why=execution.why,
        )
        try:
            result = await (handler.run(context) if resumed_from is None else handler.resume(context))
        except asyncio.CancelledError as exc:
            if self._handover and execution.superseded_by is None:
                raise  # left running in the database: the new leader takes it over
            if execution.superseded_by is None:
                execution.interrupted = exc
            return ActionResult(
                OperationStatus.CANCELLED,
                execution.superseded_by or "interrupted: mko stopped while the action ran",
            )
        except MkoError as exc:
            return ActionResult(OperationStatus.FAILED, str(exc))
        except Exception as exc:
            log.exception("rule %s: action %s crashed", execution.rule_id, execution.action.value)
            return ActionResult(OperationStatus.FAILED, f"{type(exc).__name__}: {exc}")
        if execution.superseded_by is not None and result.status == OperationStatus.CANCELLED:
            summary = f"{execution.superseded_by}: {result.summary}"
            result = ActionResult(result.status, summary, result.operation_id, result.extra)
        return result

    def _record_and_reraise(self, execution: Execution, result: ActionResult) -> None:
        self._record_result(execution, result)
        if execution.interrupted is not None:
            raise execution.interrupted

    def adopt(self, session: Session, operation_id: int, previous: str) -> None:
        """Take over a rule execution ``previous`` left open (its instance died or lost the leadership).

        One still waiting its delay waits whatever is left of it; a running one is resumed when its
        action is repeatable (a wake) and finished as failed otherwise (a shutdown is never repeated).
        """
        operation = session.get_one(Operation, operation_id)
        params, event = operation.parameters, operation.result.get("event") or {}
        try:
            action = ClusterAction(params["cluster_action"])
            kind = PowerEvent(event["event"])
            occurred = datetime.fromisoformat(event["occurred_at"])
        except (KeyError, ValueError):
            from mko.operations.interrupted import fail_interrupted

            fail_interrupted(session, operation, previous)
            return
        rule_id = int(params.get("rule_id") or 0)
        delay = int(params.get("action_delay") or 0)
        loop = asyncio.get_running_loop()
        left = max(0.0, (occurred + timedelta(seconds=delay) - utcnow()).total_seconds())
        running = operation.status == OperationStatus.RUNNING
        execution = Execution(
            rule_id=rule_id,
            rule_name=str(params.get("rule_name") or ""),
            ups_id=int(event.get("ups_id") or 0),
            ups_name=operation.source.removeprefix("ups:"),
            cluster_id=operation.target_id or 0,
            action=action,
            event=kind,
            event_id=int(event.get("id") or 0),
            delay=delay,
            priority=int(params.get("priority") or 0),
            operation_id=operation.id,
            due=loop.time() + (0.0 if running else left),
            resumed_from=previous if running else None,
        )
        operation.result = {**operation.result, "taken_over": {"from": previous, "by": current_instance()}}
        session.commit()
        log.warning("rule %s: execution %s taken over from %s", rule_id, operation.id, previous)
        if self._closed:
            return
        self._active[rule_id] = execution
        task = asyncio.create_task(self._run_batch([execution]), name=f"mko-rules-adopted-{operation.id}")
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    def _record_result(self, execution: Execution, result: ActionResult) -> None:
        succeeded = result.status == OperationStatus.SUCCEEDED
        counter = PowerRule.success_count if succeeded else PowerRule.failure_count
        with self.session_factory() as session:
            session.execute(
                update(PowerRule).where(PowerRule.id == execution.rule_id).values({counter.key: counter + 1})
            )
            operation = session.get_one(Operation, execution.operation_id)
            detail = {"operation_id": result.operation_id} if result.operation_id is not None else {}
            for step in operation.steps:
                if step.status == OperationStatus.RUNNING:
                    step.status, step.message, step.detail = result.status, result.summary, detail
                    step.finished_at = utcnow()
            operation.result = {
                **operation.result,
                "action_operation_id": result.operation_id,
                **result.extra,
            }
            summary = f"{execution.action.value}: {result.summary}"
            if result.operation_id is not None:
                summary += f" (operation {result.operation_id})"
            _finish(session, operation, result.status, summary)
        log.info("rule %s %s: %s", execution.rule_id, result.status.value, result.summary)
        self._notify_finished(execution, result.status, summary, result.operation_id)

    def _new_operation(self, session: Session, rule: PowerRule, ups_name: str, event: UpsEvent) -> Operation:
        operation = Operation(
            instance=current_instance(),
            kind=RULE_OPERATION_KIND,
            target_type="cluster",
            target_id=rule.cluster_id,
            actor=f"rule:{rule.id}",
            source=f"ups:{ups_name}",
            status=OperationStatus.PENDING,
            summary=f"{rule.name}: {rule.cluster_action.value} for {event.event.value}",
            parameters={
                "rule_id": rule.id,
                "rule_name": rule.name,
                "cluster_action": rule.cluster_action.value,
                "action_delay": rule.action_delay,
                "priority": rule.priority,
                "battery_threshold": rule.battery_threshold,
                "min_charge": rule.min_charge,
                "stable_for": rule.stable_for,
            },
            result={"event": _event_dict(event)},
        )
        ownership.stamp(operation)
        session.add(operation)
        session.flush()
        return operation


def _concerns(rule: PowerRule, event: UpsEvent) -> bool:
    """A low_battery rule fires for its own threshold, a runtime_low rule for its own cluster.

    Events of a monitor's start (mko.ups.monitor) concern the clusters of the open outages only.
    """
    if "outages" in event.detail:
        return rule.cluster_id in event.detail.get("clusters", [])
    if event.event == PowerEvent.LOW_BATTERY:
        if rule.battery_threshold is None:
            return bool(event.detail.get("lb"))
        return rule.battery_threshold in event.detail.get("thresholds", [])
    if event.event == PowerEvent.RUNTIME_LOW:
        return rule.cluster_id in event.detail.get("clusters", [])
    return True


def _event_dict(event: UpsEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "ups_id": event.ups_id,
        "event": event.event.value,
        "occurred_at": event.occurred_at.isoformat(),
        "status_before": event.status_before,
        "status_after": event.status_after,
        "battery_charge": event.battery_charge,
        "message": event.message,
    }


def _clock(at: datetime, delay: int) -> str:
    return (at + timedelta(seconds=delay)).isoformat(timespec="seconds")


def _step(session: Session, operation: Operation, name: str, status: OperationStatus, message: str) -> None:
    now = utcnow()
    operation.steps.append(
        OperationStep(
            seq=len(operation.steps) + 1,
            name=name,
            status=status,
            message=message,
            detail={},
            started_at=now,
            finished_at=None if status in (OperationStatus.RUNNING, OperationStatus.PENDING) else now,
        )
    )
    session.commit()


def _finish(session: Session, operation: Operation, status: OperationStatus, summary: str) -> None:
    now = utcnow()
    for step in operation.steps:
        if step.status in (OperationStatus.RUNNING, OperationStatus.PENDING):
            step.status, step.finished_at = status, now
            if not step.message:
                step.message = summary
    operation.status = status
    operation.summary = summary
    operation.finished_at = now
    session.commit()
    log.info("operation %s %s: %s", operation.id, status.value, summary)
