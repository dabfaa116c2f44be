"""Power rules: checks at creation, and the engine's semantics (delay, cancellation, conflicts, order).

The engine is exercised through its generic action interface with small timed actions, so each rule of
the semantics is observable in isolation; the wake_on_lan action itself fires against a real upsd and
real lab network cards in tests/integration/ups/test_ups_nut.py.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.inventory.clusters import create_cluster
from mko.inventory.schemas import ClusterCreate
from mko.operations.kinds import RULE_OPERATION_KIND
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.outages import OutagePhase
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import PowerEvent, UpsEvent
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.errors import InputError
from mko.platform.settings import Settings
from mko.rules.actions import ACTIONS, ActionContext, ActionResult, ClusterActionHandler
from mko.rules.engine import RuleEngine
from mko.rules.schemas import RuleCreate
from mko.rules.service import DEFAULT_STABLE_FOR, create_rule, delete_rule, list_rules, set_rule_enabled
from mko.ups import outages
from mko.ups.events import DetectedEvent
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups, record_events
from mko.ups.status import UpsReading
from support.owners import exited_process, make_owned_by

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Timed(ClusterActionHandler):
    """Takes ``duration`` seconds; records when each run started and ended, and how many overlapped."""

    action: ClassVar[ClusterAction] = ClusterAction.WAKE_ON_LAN

    def __init__(self, log: list[tuple[str, str, int, float]], duration: float = 0.2) -> None:
        self.log = log
        self.duration = duration

    async def run(self, context: ActionContext) -> ActionResult:
        loop = asyncio.get_running_loop()
        self.log.append(("start", self.action.value, context.rule_id, loop.time()))
        try:
            await asyncio.sleep(self.duration)
        finally:
            self.log.append(("end", self.action.value, context.rule_id, loop.time()))
        return ActionResult(OperationStatus.SUCCEEDED, f"{self.action.value} done")


class TimedShutdown(Timed):
    action: ClassVar[ClusterAction] = ClusterAction.GRACEFUL_SHUTDOWN


class TimedForce(Timed):
    action: ClassVar[ClusterAction] = ClusterAction.FORCE_SHUTDOWN


class Ctx:
    """A database with one UPS and two clusters, and an engine with timed actions."""

    def __init__(self, settings: Settings, session: Session, duration: float = 0.2) -> None:
        self.session = session
        self.log: list[tuple[str, str, int, float]] = []
        self.actions: dict[ClusterAction, ClusterActionHandler] = {
            ClusterAction.WAKE_ON_LAN: Timed(self.log, duration),
            ClusterAction.GRACEFUL_SHUTDOWN: TimedShutdown(self.log, duration),
            ClusterAction.FORCE_SHUTDOWN: TimedForce(self.log, duration),
        }
        self.engine_db = make_engine(settings.database_url)
        self.factory: sessionmaker[Session] = make_session_factory(self.engine_db)
        self.charge: float | None = None  # what the UPS reports, for restore rules waiting for charge
        self.engine = RuleEngine(self.factory, settings, self.actions, readings=self.reading)
        self.ups = create_ups(session, settings, UpsCreate(name="u", ups_name="myups"))
        self.c1 = create_cluster(session, ClusterCreate(name="c1")).id
        self.c2 = create_cluster(session, ClusterCreate(name="c2")).id

    def reading(self, ups_id: int) -> UpsReading | None:
        variables = {"ups.status": "OL CHRG"}
        if self.charge is not None:
            variables["battery.charge"] = f"{self.charge:g}"
        return UpsReading.from_variables(variables, datetime.now(UTC))

    def rule(self, event: PowerEvent, action: ClusterAction = ClusterAction.WAKE_ON_LAN, **kw: Any) -> int:
        kw.setdefault("cluster_id", self.c1)
        if event == PowerEvent.POWER_RESTORED:
            kw.setdefault("stable_for", 0)  # the engine's other semantics, without the default 10 s
        data = RuleCreate(ups_id=self.ups.id, power_event=event, cluster_action=action, **kw)
        return create_rule(self.session, data, self.actions).id

    async def event(self, event: PowerEvent, after: str = "OB", **detail: Any) -> UpsEvent:
        detected = DetectedEvent(event, datetime.now(UTC), "OL", after, 90.0, event.value, detail)
        [row] = record_events(self.session, self.ups.id, [detected])
        await self.engine.handle(row, self.ups.name)
        return row

    def operations(self) -> list[Operation]:
        with self.factory() as session:
            found = list(
                session.scalars(
                    select(Operation).where(Operation.kind == RULE_OPERATION_KIND).order_by(Operation.id)
                )
            )
            for operation in found:
                _ = operation.steps
            return found

    def counters(self, rule_id: int) -> tuple[int, int, int]:
        with self.factory() as session:
            rule = session.get_one(PowerRule, rule_id)
            return rule.execution_count, rule.success_count, rule.failure_count

    def spans(self) -> list[tuple[int, float, float]]:
        starts = {(a, r): t for kind, a, r, t in self.log if kind == "start"}
        return sorted((r, starts[(a, r)], t) for kind, a, r, t in self.log if kind == "end")

    async def close(self) -> None:
        await self.engine.close()
        self.engine_db.dispose()


@pytest.fixture
async def ctx(settings: Settings, session: Session) -> Any:
    context = Ctx(settings, session)
    yield context
    await context.close()


def test_create_rule_checks_every_field_and_stores_nothing_wrong(
    settings: Settings, session: Session
) -> None:
    ups = create_ups(session, settings, UpsCreate(name="u", ups_name="myups"))
    cluster = create_cluster(session, ClusterCreate(name="c")).id
    base = {"ups_id": ups.id, "cluster_id": cluster, "power_event": "power_restored"}
    bad = [
        ({"ups_id": 99}, "ups_id", "UPS 99 does not exist"),
        ({"cluster_id": 99}, "cluster_id", "cluster 99 does not exist"),
        ({"battery_threshold": 30}, "battery_threshold", "low_battery only"),
        ({"power_event": "low_battery", "battery_threshold": 0}, "battery_threshold", "1-100"),
        ({"action_delay": -1}, "action_delay", "0-86400"),
        ({"priority": 10_001}, "priority", "0-10000"),
        ({"power_event": "power_loss", "min_charge": 50}, "min_charge", "power_restored only"),
        ({"min_charge": 0}, "min_charge", "1-100"),
        ({"power_event": "power_loss", "stable_for": 5}, "stable_for", "power_restored only"),
        ({"stable_for": 86_401}, "stable_for", "0-86400"),
    ]
    for change, field, message in bad:
        data = RuleCreate.model_validate(base | {"cluster_action": "wake_on_lan"} | change)
        with pytest.raises(InputError) as caught:
            create_rule(session, data)
        assert (caught.value.field, message in caught.value.message) == (field, True)
    # An action without a handler in the registry in use is refused: a rule must be able to act.
    wake_only = {ClusterAction.WAKE_ON_LAN: ACTIONS[ClusterAction.WAKE_ON_LAN]}
    data = RuleCreate.model_validate(base | {"cluster_action": "graceful_shutdown"})
    with pytest.raises(InputError) as caught:
        create_rule(session, data, wake_only)
    assert caught.value.field == "cluster_action" and "not available in this version" in caught.value.message
    assert list_rules(session) == []
    rule = create_rule(session, RuleCreate.model_validate(base | {"cluster_action": "wake_on_lan"}))
    assert (rule.name, rule.priority, rule.action_delay, rule.enabled, rule.recover_after_wake) == (
        "power_restored → wake_on_lan",
        100,
        0,
        True,
        True,
    )
    # A restore waits for mains to hold 10 s by default, and for no particular charge.
    assert (rule.stable_for, rule.min_charge) == (DEFAULT_STABLE_FOR, None) == (10, None)
    for action in ("graceful_shutdown", "force_shutdown"):
        change = {"power_event": "power_loss", "cluster_action": action, "recover_after_wake": False}
        made = create_rule(session, RuleCreate.model_validate(base | change))
        assert (made.cluster_action.value, made.recover_after_wake) == (action, False)
        delete_rule(session, made.id)
    assert set_rule_enabled(session, rule.id, False).enabled is False
    delete_rule(session, rule.id)
    assert list_rules(session) == []


async def test_delayed_action_is_cancelled_by_the_opposite_event(ctx: Ctx) -> None:
    shutdown = ctx.rule(PowerEvent.POWER_LOSS, ClusterAction.GRACEFUL_SHUTDOWN, action_delay=1)
    low = ctx.rule(PowerEvent.LOW_BATTERY, ClusterAction.GRACEFUL_SHUTDOWN, action_delay=1, cluster_id=ctx.c2)
    wake = ctx.rule(PowerEvent.POWER_RESTORED, action_delay=1)
    await ctx.event(PowerEvent.POWER_LOSS)
    await ctx.event(PowerEvent.LOW_BATTERY, thresholds=[], lb=True)
    assert [op.status for op in ctx.operations()] == [OperationStatus.PENDING] * 2
    await asyncio.sleep(0.3)
    restored = await ctx.event(PowerEvent.POWER_RESTORED)  # power back before the delay ended
    await asyncio.sleep(0.2)
    loss_op, low_op, wake_op = ctx.operations()
    for cancelled in (loss_op, low_op):
        assert cancelled.status == OperationStatus.CANCELLED
        assert f"power_restored (event {restored.id}) came before" in cancelled.summary
        assert cancelled.steps[0].status == OperationStatus.CANCELLED
    await ctx.engine.idle()
    assert ctx.operations()[2].status == OperationStatus.SUCCEEDED
    assert [(kind, rule) for kind, _, rule, _ in ctx.log] == [("start", wake), ("end", wake)]
    assert ctx.counters(shutdown) == ctx.counters(low) == (0, 0, 0)
    assert ctx.counters(wake) == (1, 1, 0)
    assert wake_op.result["event"]["id"] == restored.id


async def test_a_new_power_loss_cancels_a_waiting_wake(ctx: Ctx) -> None:
    wake = ctx.rule(PowerEvent.POWER_RESTORED, action_delay=1)
    await ctx.event(PowerEvent.POWER_RESTORED)
    await asyncio.sleep(0.1)
    loss = await ctx.event(PowerEvent.POWER_LOSS)  # mains flickered back off
    await ctx.engine.idle()
    [op] = ctx.operations()
    assert op.status == OperationStatus.CANCELLED and f"power_loss (event {loss.id})" in op.summary
    assert ctx.log == [] and ctx.counters(wake) == (0, 0, 0)


async def test_the_same_action_running_on_a_cluster_skips_the_newcomer(ctx: Ctx) -> None:
    first = ctx.rule(PowerEvent.POWER_RESTORED)
    second = ctx.rule(PowerEvent.COMM_RESTORED)
    twin = ctx.rule(PowerEvent.POWER_RESTORED, priority=200)  # same event, cluster and action
    await ctx.event(PowerEvent.POWER_RESTORED)
    await asyncio.sleep(0.05)
    await ctx.event(PowerEvent.COMM_RESTORED)
    await ctx.event(PowerEvent.POWER_RESTORED)  # the first rule is still running
    await ctx.engine.idle()
    ops = {op.parameters["rule_id"]: [] for op in ctx.operations()}
    for op in ctx.operations():
        ops[op.parameters["rule_id"]].append(op)
    assert [op.status for op in ops[first]] == [OperationStatus.SUCCEEDED, OperationStatus.CANCELLED]
    assert "this rule is still running" in ops[first][1].summary
    [skipped_second] = ops[second]
    assert "wake_on_lan of cluster" in skipped_second.summary and "already running" in skipped_second.summary
    assert f"rule {first} already does wake_on_lan on cluster {ctx.c1}" in ops[twin][0].summary
    assert all(op.status == OperationStatus.CANCELLED for op in ops[twin])
    assert [rule for kind, _, rule, _ in ctx.log if kind == "start"] == [first]
    assert ctx.counters(second) == ctx.counters(twin) == (0, 0, 0)


async def test_a_different_action_supersedes_the_running_one_never_overlapping(ctx: Ctx) -> None:
    shutdown = ctx.rule(PowerEvent.POWER_LOSS, ClusterAction.GRACEFUL_SHUTDOWN)
    wake = ctx.rule(PowerEvent.POWER_RESTORED)
    await ctx.event(PowerEvent.POWER_LOSS)
    await asyncio.sleep(0.05)  # the shutdown is running
    await ctx.event(PowerEvent.POWER_RESTORED)
    await ctx.engine.idle()
    shutdown_op, wake_op = ctx.operations()
    assert shutdown_op.status == OperationStatus.CANCELLED
    assert f"superseded by rule {wake} (wake_on_lan on power_restored)" in shutdown_op.summary
    assert wake_op.status == OperationStatus.SUCCEEDED
    (r1, _, e1), (r2, s2, _) = sorted(ctx.spans(), key=lambda span: span[1])
    assert (r1, r2) == (shutdown, wake) and e1 <= s2  # the wake started after the shutdown stopped
    assert ctx.counters(shutdown) == (1, 0, 1)
    assert ctx.counters(wake) == (1, 1, 0)


class SafePointShutdown(ClusterActionHandler):
    """Three 0.15 s steps; asked to stop, it finishes the step in progress and reports cancelled."""

    action: ClassVar[ClusterAction] = ClusterAction.GRACEFUL_SHUTDOWN
    stops_at_safe_point = True

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.reason = ""
        self.ended = 0.0

    async def run(self, context: ActionContext) -> ActionResult:
        for step in ("workers", "control plane", "drain host"):
            if context.stop.is_set():
                self.reason, self.ended = context.stop.reason, asyncio.get_running_loop().time()
                return ActionResult(OperationStatus.CANCELLED, f"stopped before {step}", 42)
            await asyncio.sleep(0.15)  # never cancelled: the engine waits for the safe point
            self.steps.append(step)
        return ActionResult(OperationStatus.SUCCEEDED, "all off", 42)


async def test_a_shutdown_superseded_by_a_wake_ends_at_its_safe_point_before_the_wake(
    settings: Settings, session: Session
) -> None:
    context = Ctx(settings, session)
    shutdown = SafePointShutdown()
    context.actions[ClusterAction.GRACEFUL_SHUTDOWN] = shutdown
    context.engine = RuleEngine(context.factory, settings, context.actions)
    try:
        down = context.rule(PowerEvent.POWER_LOSS, ClusterAction.GRACEFUL_SHUTDOWN)
        up = context.rule(PowerEvent.POWER_RESTORED)
        await context.event(PowerEvent.POWER_LOSS)
        await asyncio.sleep(0.05)  # inside the first step
        await context.event(PowerEvent.POWER_RESTORED)
        await context.engine.idle()
        shutdown_op, wake_op = context.operations()
    finally:
        await context.close()
    assert shutdown.steps == ["workers"]  # the step in progress finished; none started after it
    superseded = f"superseded by rule {up} (wake_on_lan on power_restored)"
    assert shutdown.reason == superseded
    assert shutdown_op.status == OperationStatus.CANCELLED
    assert (
        shutdown_op.summary == f"graceful_shutdown: {superseded}: stopped before control plane (operation 42)"
    )
    assert shutdown_op.result["action_operation_id"] == 42
    assert wake_op.status == OperationStatus.SUCCEEDED
    [(_, wake_start, _)] = context.spans()
    assert wake_start >= shutdown.ended > 0  # the wake began only once the shutdown had stopped
    assert context.counters(down) == (1, 0, 1) and context.counters(up) == (1, 1, 0)


async def test_priority_orders_rules_of_one_event(ctx: Ctx) -> None:
    late = ctx.rule(PowerEvent.POWER_RESTORED, priority=20, cluster_id=ctx.c2)
    early = ctx.rule(PowerEvent.POWER_RESTORED, priority=10)
    await ctx.event(PowerEvent.POWER_RESTORED)
    await ctx.engine.idle()
    spans = {rule: (start, end) for rule, start, end in ctx.spans()}
    assert spans[early][1] <= spans[late][0]


async def test_a_rule_disabled_or_deleted_while_it_waits_does_not_fire(ctx: Ctx) -> None:
    disabled = ctx.rule(PowerEvent.POWER_LOSS, action_delay=1)
    deleted = ctx.rule(PowerEvent.POWER_LOSS, action_delay=1, cluster_id=ctx.c2)
    await ctx.event(PowerEvent.POWER_LOSS)
    set_rule_enabled(ctx.session, disabled, False)
    delete_rule(ctx.session, deleted)
    await ctx.engine.idle()
    summaries = sorted(op.summary for op in ctx.operations())
    assert summaries == [
        "cancelled: the rule was deleted before the action was taken",
        "cancelled: the rule was disabled before the action was taken",
    ]
    assert ctx.log == []


async def test_low_battery_rules_match_their_threshold_or_lb(ctx: Ctx) -> None:
    at_50 = ctx.rule(PowerEvent.LOW_BATTERY, battery_threshold=50)
    on_lb = ctx.rule(PowerEvent.LOW_BATTERY, cluster_id=ctx.c2)
    await ctx.event(PowerEvent.LOW_BATTERY, thresholds=[50], lb=False)
    await ctx.engine.idle()
    assert [rule for kind, _, rule, _ in ctx.log if kind == "start"] == [at_50]
    await ctx.event(PowerEvent.LOW_BATTERY, thresholds=[], lb=True)
    await ctx.engine.idle()
    assert [rule for kind, _, rule, _ in ctx.log if kind == "start"] == [at_50, on_lb]


async def test_stopping_cancels_waiting_executions_and_a_restart_closes_leftovers(
    ctx: Ctx, settings: Settings
) -> None:
    ctx.rule(PowerEvent.POWER_LOSS, action_delay=60)
    await ctx.event(PowerEvent.POWER_LOSS)
    await ctx.engine.close()
    [op] = ctx.operations()
    assert (op.status, op.summary) == (
        OperationStatus.CANCELLED,
        "cancelled: mko stopped before the action was taken",
    )
    # A process that died without closing leaves rows open; the next engine closes them at start,
    # but only once that process is gone: this one, still alive, keeps its own.
    with ctx.factory() as session:
        left = session.get_one(Operation, op.id)
        left.status = OperationStatus.PENDING
        session.commit()
    assert RuleEngine(ctx.factory, settings, ctx.actions).recover() == 0
    dead = exited_process()
    with ctx.factory() as session:
        make_owned_by(session.get_one(Operation, op.id), dead)
        session.commit()
    assert RuleEngine(ctx.factory, settings, ctx.actions).recover() == 1
    [op] = ctx.operations()
    assert op.status == OperationStatus.CANCELLED
    assert op.summary.startswith(
        f"cancelled before the delay ended: owner pid {dead.pid} on host {dead.host} gone since "
    )


async def test_a_restore_rule_waits_for_charge_and_mains_and_shows_what_it_waits_for(ctx: Ctx) -> None:
    wake = ctx.rule(PowerEvent.POWER_RESTORED, min_charge=50, stable_for=1)
    ctx.charge = 34
    await ctx.event(PowerEvent.POWER_RESTORED)
    await asyncio.sleep(0.3)
    [op] = ctx.operations()
    assert op.status == OperationStatus.PENDING and ctx.log == []
    assert [(s.name, s.status, s.message) for s in op.steps] == [
        ("wait for power", OperationStatus.RUNNING, "waiting: mains held 0 s of 1 s, charge 34 % of 50 %")
    ]
    assert ctx.engine.pending()[0]["waiting_for"] == "waiting: mains held 0 s of 1 s, charge 34 % of 50 %"
    await asyncio.sleep(1.2)  # mains has held long enough; the charge has not
    assert ctx.operations()[0].steps[0].message == "waiting: charge 34 % of 50 %"
    assert ctx.log == []
    ctx.charge = 51
    await ctx.engine.idle()
    [op] = ctx.operations()
    assert op.status == OperationStatus.SUCCEEDED and ctx.counters(wake) == (1, 1, 0)
    assert op.steps[0].status == OperationStatus.SUCCEEDED
    assert re.fullmatch(r"ready: mains held [12] s, charge 51 %", op.steps[0].message)


async def test_power_lost_again_while_waiting_for_charge_cancels_the_restore(ctx: Ctx) -> None:
    wake = ctx.rule(PowerEvent.POWER_RESTORED, min_charge=50)
    ctx.charge = 20
    await ctx.event(PowerEvent.POWER_RESTORED)
    await asyncio.sleep(0.3)
    loss = await ctx.event(PowerEvent.POWER_LOSS)
    await ctx.engine.idle()
    [op] = ctx.operations()
    assert op.status == OperationStatus.CANCELLED and f"power_loss (event {loss.id})" in op.summary
    assert (op.steps[0].status, op.steps[0].message) == (
        OperationStatus.CANCELLED,
        "waiting: charge 20 % of 50 %",
    )
    assert ctx.log == [] and ctx.counters(wake) == (0, 0, 0)


async def test_runtime_low_runs_the_rules_of_the_clusters_it_names(ctx: Ctx) -> None:
    first = ctx.rule(PowerEvent.RUNTIME_LOW, ClusterAction.GRACEFUL_SHUTDOWN)
    second = ctx.rule(PowerEvent.RUNTIME_LOW, ClusterAction.GRACEFUL_SHUTDOWN, cluster_id=ctx.c2)
    await ctx.event(PowerEvent.RUNTIME_LOW, clusters=[ctx.c2], needs={str(ctx.c2): 420}, runtime=400)
    await ctx.engine.idle()
    assert ctx.counters(first) == (0, 0, 0) and ctx.counters(second) == (1, 1, 0)


async def test_fsd_from_the_primary_means_shut_down_now(ctx: Ctx) -> None:
    delayed = ctx.rule(PowerEvent.POWER_LOSS, ClusterAction.GRACEFUL_SHUTDOWN, action_delay=60)
    other = ctx.rule(PowerEvent.LOW_BATTERY, ClusterAction.GRACEFUL_SHUTDOWN, cluster_id=ctx.c2)
    await ctx.event(PowerEvent.POWER_LOSS)
    await asyncio.sleep(0.1)
    assert ctx.log == []  # waiting its minute
    fsd = await ctx.event(PowerEvent.UPS_SHUTDOWN, after="FSD OB LB")
    await ctx.engine.idle()
    ran = {(action, rule) for kind, action, rule, _ in ctx.log if kind == "start"}
    # The waiting one at once; the other cluster's rule too, without drains.
    assert ran == {("graceful_shutdown", delayed), ("force_shutdown", other)}
    forced = next(op for op in ctx.operations() if op.parameters["rule_id"] == other)
    assert forced.result["event"]["id"] == fsd.id and forced.status == OperationStatus.SUCCEEDED
    assert forced.summary.startswith("force_shutdown: ")
    assert ctx.counters(delayed) == ctx.counters(other) == (1, 1, 0)


async def test_fsd_after_mkos_own_power_cycle_starts_nothing(ctx: Ctx) -> None:
    ctx.rule(PowerEvent.POWER_LOSS, ClusterAction.GRACEFUL_SHUTDOWN, cluster_id=ctx.c2)
    outage = outages.open_outage(
        ctx.session, ups_id=ctx.ups.id, cluster_id=ctx.c1, event="power_loss", event_id=None, reason="t",
        nodes_up=[],
    )  # fmt: skip
    outages.set_phase(ctx.session, outage, OutagePhase.DOWN, "down", power_cycle={"outcome": "sent"})
    await ctx.event(PowerEvent.UPS_SHUTDOWN, after="FSD OB DISCHRG")  # the UPS confirming mko's command
    await ctx.engine.idle()
    assert ctx.log == [] and ctx.operations() == []
