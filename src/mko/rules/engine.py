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
``recover_after_wake`` is set — the default — the cluster recovery of mko.cluster.shutdown: ``microk8s start``
everywhere, every node Ready, uncordon), ``graceful_shutdown`` and ``force_shutdown`` (mko.cluster.shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mko.cluster.plan import SHUTDOWN_ACTIONS
from mko.operations import ownership
from mko.operations.identity import current_instance
from mko.operations.kinds import RULE_OPERATION_KIND
from mko.operations.records import Actor
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.ha import UpsState
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.outages import OutagePhase
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import PowerEvent, UpsEvent
from mko.platform.errors import MkoError
from mko.platform.settings import Settings
from mko.rules.actions import ACTIONS, ActionContext, ActionResult, StopSignal
from mko.rules.records import _finish, _step
from mko.rules.service import _missing_action_message, low_battery_thresholds, runtime_needs
from mko.ups import outages
from mko.ups.monitor import Thresholds
from mko.ups.status import UpsReading

if TYPE_CHECKING:
    from mko.rules.actions import ClusterActionHandler

__all__ = ["CANCELS", "RuleEngine"]

log = logging.getLogger("mko.rules")


STOPPED_WAITING = "cancelled: mko stopped before the action was taken"


# event -> the events whose WAITING executions it cancels.
CANCELS: dict[PowerEvent, frozenset[PowerEvent]] = {
    PowerEvent.POWER_RESTORED: frozenset(
        {PowerEvent.POWER_LOSS, PowerEvent.LOW_BATTERY, PowerEvent.CRITICAL_BATTERY, PowerEvent.RUNTIME_LOW}
    ),
    PowerEvent.POWER_LOSS: frozenset({PowerEvent.POWER_RESTORED}),
    PowerEvent.COMM_RESTORED: frozenset({PowerEvent.COMM_LOST}),
    PowerEvent.COMM_LOST: frozenset({PowerEvent.COMM_RESTORED}),
}


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
        for the new leader to take over (mko.ha.failover) instead of being closed as cancelled.
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

    def thresholds(self, session: Session) -> Thresholds:
        """The battery levels and runtime needs of the enabled rules: what the UPS monitor watches for."""
        return Thresholds(low_battery_thresholds(session), runtime_needs(session, self.settings))

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
            if execution.ups_id == event.ups_id and execution.action in SHUTDOWN_ACTIONS:
                covered.add(execution.cluster_id)
                execution.hurry.set()
        now = asyncio.get_running_loop().time()
        forced: list[Execution] = []
        for rule in session.scalars(
            select(PowerRule)
            .where(
                PowerRule.ups_id == event.ups_id,
                PowerRule.enabled.is_(True),
                PowerRule.cluster_action.in_(SHUTDOWN_ACTIONS),
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
            e.ups_id == ups_id and e.action in SHUTDOWN_ACTIONS
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
