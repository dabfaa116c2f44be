"""Graceful cluster shutdown in the order MicroK8s needs, and verified recovery after power returns.

Shutdown (``graceful_shutdown``; ``force_shutdown`` skips the drains)::

    0. host keys: every node's key is checked against known_hosts; a node presenting another key is
       refused (nothing runs on it, nor is it drained), the others go on
    1. workers, all at once, each: drain (run on the drain host) → microk8s stop → power off
    2. control-plane nodes, one at a time: drain → microk8s stop → power off
    3. the drain host last of all: microk8s stop → power off

The drain host is the first control plane (by id) whose SSH port answers. Losing two of three dqlite
voters loses quorum, so control planes go one at a time and last, and the node running the drains
goes last so the API answers until the end. A failed drain is recorded and the shutdown goes on: the
battery is running out. Every command has a timeout (settings ``drain_timeout``,
``microk8s_stop_timeout``, ``poweroff_timeout``, ``ssh_connect_timeout``).

Recovery: wait for SSH on every node → ``microk8s start`` on each (``microk8s stop`` disables the
services across reboots) → wait until ``microk8s kubectl get nodes -o json`` shows *every* inventory
node Ready by name (``microk8s status --wait-ready`` passes when any one node is Ready) → uncordon the
nodes this orchestrator cordoned (they stay cordoned after a reboot). Reported per node.

Power race: a running shutdown can be asked to stop (``abort``, e.g. by the rule engine when power
returns). The step in progress always finishes — a ``microk8s stop`` or power-off is never cut off
half-way, even when the task itself is cancelled — and nothing further starts; the operation ends
``cancelled`` listing what was skipped, and the wake + recovery that follow bring back whatever was
stopped. See docs/shutdown.md.

A shutdown *for a UPS* (a rule's, or ``--ups``) is an outage (mko.outages): recorded before the first
step with the nodes that answered, each confirmed power-off added as it happens. Once every node is
confirmed off it ends like a NUT primary: ``4.`` the UPS power-cycles its load (mko.ups.power_cycle;
never when mains has returned), ``5.`` mko's own host is shut down last (``MKO_HOST_UPS``,
``MKO_HOST_SHUTDOWN_COMMAND``, after a marker file), so the next start knows why it was down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko import inventory, outages, schedules
from mko.operations import ownership
from mko.operations.records import Actor, finish_operation, record_step, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Cluster, Node, NodeRole
from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
from mko.platform.db.models.outages import OutagePhase
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.schedules import ScheduleAction
from mko.platform.db.models.ups import UPS
from mko.platform.errors import ConflictError, FatalPowerError, InputError, PowerError
from mko.platform.secrets import SecretBox
from mko.platform.settings import Settings
from mko.power.base import NodeSnapshot, OutcomeState, WakeSchedule, power_off
from mko.power.probe import probe_tcp
from mko.power.registry import driver_class, driver_lookup
from mko.ssh.client import (
    CommandResult,
    HostKeyChangedError,
    HostKeyUnknownError,
    SshError,
    SshTarget,
    connect,
)
from mko.ssh.host_keys import scan_host_key
from mko.ups.power_cycle import PowerCycle, power_cycle
from mko.ups.service import target_of

__all__ = [
    "SHUTDOWN_KINDS",
    "PlanInputs",
    "PlannedStep",
    "PreparedRecovery",
    "PreparedShutdown",
    "ShutdownPlan",
    "StepHook",
    "build_plan",
    "kube_name",
    "last_duration",
    "plan_for",
    "plan_inputs",
    "plan_shutdown",
    "ready_nodes",
    "run_recovery",
    "run_shutdown",
    "start_recovery",
    "start_shutdown",
]

log = logging.getLogger("mko.shutdown")

StepHook = Callable[[str, str, OperationStatus], None]

SHUTDOWN_KINDS = ("cluster_shutdown", "cluster_force_shutdown")
SHUTDOWN_ACTIONS = (ClusterAction.GRACEFUL_SHUTDOWN, ClusterAction.FORCE_SHUTDOWN)
RECOVER_KIND = "cluster_recover"
# NOTE: on a node joined with `microk8s join --worker`, `microk8s stop` and `microk8s start` only print
# this notice and exit 0 (the wrappers check var/lock/clustered.lock); `snap stop|start microk8s` works.
_WORKER_NOTICE = "acting as a node in a cluster"
_COMMAND_NOT_FOUND = 127


def kube_name(node: Node) -> str:
    """Return the node's name in Kubernetes: its host name, lowercased as kubelet registers it."""
    return node.hostname.lower()


# ------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class PlannedStep:
    """One action on one node, and where its command runs."""

    node_id: int
    hostname: str
    action: str  # drain | stop | poweroff
    runs_on: str  # hostname whose SSH runs the command, or "driver:<name>"

    def describe(self) -> str:
        """One line for the plan."""
        what = {
            "drain": "kubectl drain",
            "stop": "microk8s stop",
            "poweroff": "power off",
        }[self.action]
        if self.runs_on.startswith("driver:"):
            where = f"soft-off by the {self.runs_on.removeprefix('driver:')} driver"
        elif self.runs_on == self.hostname:
            where = "over SSH" if self.action == "stop" else "systemctl poweroff over SSH"
        else:
            where = f"run on {self.runs_on}"
        return f"{what:<14} {self.hostname} ({where})"


@dataclass(frozen=True)
class UpsFinale:
    """How a shutdown for a UPS ends: its load power-cycled, then mko's own host (when it is on it)."""

    ups_id: int
    ups_name: str
    power_cycle: bool
    host_command: tuple[str, ...] = ()  # MKO_HOST_SHUTDOWN_COMMAND when MKO_HOST_UPS names this UPS
    marker: str = ""

    def lines(self, number: int, conditional: bool) -> list[str]:
        """The plan's last sections."""
        when = f" (for UPS {self.ups_name}: its rules, or --ups {self.ups_id})" if conditional else ""
        out = []
        if self.power_cycle:
            out += [
                f"{number}. then the UPS, once every node is confirmed off{when}:",
                f"   power-cycle    {self.ups_name} (INSTCMD shutdown.return, or load.off.delay with the"
                " UPS's delays; skipped if mains has returned)",
            ]
            number += 1
        if self.host_command:
            out += [
                f"{number}. then mko's own host, the very last step{when}:",
                f"   host shutdown  {shlex.join(self.host_command)} (after writing {self.marker})",
            ]
        return out


@dataclass
class ShutdownPlan:
    """The ordered plan: parallel worker chains, then control planes one at a time."""

    cluster_id: int
    cluster_name: str
    force: bool
    drain_host: str | None
    parallel: list[list[PlannedStep]] = field(default_factory=list)
    serial: list[list[PlannedStep]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # A shutdown for a UPS (an outage): its id, the nodes that answered when planned, and how it ends.
    ups_id: int | None = None
    nodes_up: list[int] = field(default_factory=list)
    finales: list[UpsFinale] = field(default_factory=list)

    @property
    def hostnames(self) -> list[str]:
        """Every node of the plan, in execution order."""
        seen: dict[str, None] = {}
        for chain in (*self.parallel, *self.serial):
            for step in chain:
                seen.setdefault(step.hostname, None)
        return list(seen)

    def lines(self) -> list[str]:
        """The plan in words, in execution order (what --dry-run prints)."""
        mode = "force shutdown (no drains)" if self.force else "graceful shutdown"
        out = [
            f"{mode} of cluster {self.cluster_id} ({self.cluster_name}); drain host: {self.drain_host or '—'}"
        ]
        out += [f"note: {note}" for note in self.notes]
        number = 1
        if self.parallel:
            out.append(f"{number}. workers, in parallel:")
            number += 1
            for chain in self.parallel:
                out.extend(f"   {step.describe()}" for step in chain)
        for chain in self.serial:
            last = chain is self.serial[-1] and chain[0].hostname == self.drain_host
            role = "the drain host, last of all" if last else "control plane, alone"
            out.append(f"{number}. then {role}:")
            number += 1
            out.extend(f"   {step.describe()}" for step in chain)
        for finale in self.finales:
            out += finale.lines(number, conditional=self.ups_id is None)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the API and the operation's parameters."""
        return {
            "cluster_id": self.cluster_id,
            "force": self.force,
            "drain_host": self.drain_host,
            "parallel": [[s.__dict__ for s in chain] for chain in self.parallel],
            "serial": [[s.__dict__ for s in chain] for chain in self.serial],
            "notes": self.notes,
            "ups_id": self.ups_id,
            "finales": [
                {
                    "ups_id": f.ups_id,
                    "ups": f.ups_name,
                    "power_cycle": f.power_cycle,
                    "host": list(f.host_command),
                }
                for f in self.finales
            ],
            "lines": self.lines(),
        }


def _power_path(node: Node) -> str:
    """``driver:<method>`` where the node's power driver can soft-off, else its own hostname (SSH)."""
    cls = driver_class(node.wol_method)
    if cls is not None and cls.supports("soft"):
        return f"driver:{node.wol_method.value}"
    return node.hostname


async def _reachable_control_plane(nodes: Sequence[Node], timeout: float) -> Node | None:
    """The first control plane (by id) whose SSH port answers."""
    for node in sorted(nodes, key=lambda n: n.id):
        if (await probe_tcp(node.ip_address, node.ssh_port, timeout)).ok:
            return node
    return None


def build_plan(
    cluster_id: int, cluster_name: str, nodes: Sequence[Node], drain_host: Node | None, *, force: bool
) -> ShutdownPlan:
    """Order the steps: workers in parallel, then control planes one by one, the drain host last."""
    controls = sorted((n for n in nodes if n.role == NodeRole.CONTROL_PLANE), key=lambda n: n.id)
    workers = sorted((n for n in nodes if n.role != NodeRole.CONTROL_PLANE), key=lambda n: n.id)
    plan = ShutdownPlan(cluster_id, cluster_name, force, drain_host.hostname if drain_host else None)
    drains = not force and drain_host is not None
    if not controls:
        plan.notes.append("the cluster has no control-plane node in the inventory: nothing can drain")
    elif drain_host is None:
        plan.notes.append("no control plane answers on SSH: nodes cannot be drained, only stopped")

    def chain(node: Node, *, drain: bool) -> list[PlannedStep]:
        steps = []
        if drain and drain_host is not None:
            steps.append(PlannedStep(node.id, node.hostname, "drain", drain_host.hostname))
        steps.append(PlannedStep(node.id, node.hostname, "stop", node.hostname))
        steps.append(PlannedStep(node.id, node.hostname, "poweroff", _power_path(node)))
        return steps

    plan.parallel = [chain(n, drain=drains) for n in workers]
    plan.serial = [chain(n, drain=drains) for n in controls if drain_host is None or n.id != drain_host.id]
    if drain_host is not None:
        # Nothing is left to drain it onto, and it runs every other drain: it goes last, undrained.
        plan.serial.append(chain(drain_host, drain=False))
    return plan


@dataclass
class PlanInputs:
    """What a shutdown plan is made of, read from the database (before any node is probed)."""

    cluster: Cluster
    nodes: list[Node]
    ups_id: int | None
    finales: list[UpsFinale]


def plan_inputs(
    session: Session, settings: Settings, cluster_id: int, ups_id: int | None = None
) -> PlanInputs:
    """The cluster, its nodes and how a shutdown for ``ups_id`` ends (ConflictError: no nodes)."""
    cluster = inventory.get_cluster(session, cluster_id)
    nodes = inventory.list_nodes(session, cluster_id)
    if not nodes:
        raise ConflictError(f"cluster {cluster_id} has no nodes")
    if ups_id is not None and session.get(UPS, ups_id) is None:
        raise InputError("ups_id", f"UPS {ups_id} does not exist")
    return PlanInputs(cluster, nodes, ups_id, _finales(session, settings, cluster_id, ups_id))


async def plan_for(inputs: PlanInputs, settings: Settings, *, force: bool) -> ShutdownPlan:
    """Work out the order; the drain host is the first control plane whose SSH port answers.

    With ``inputs.ups_id`` the shutdown is for this UPS (an outage): every node is probed, so the
    outage knows which were up, and the plan ends with the UPS's power cycle and mko's own host where
    configured. Without it the plan shows how a shutdown for each UPS whose rules act on the cluster
    would end. No database work: an API route awaits this between worker-thread sessions.
    """
    nodes = inputs.nodes
    controls = [n for n in nodes if n.role == NodeRole.CONTROL_PLANE]
    drain_host = await _reachable_control_plane(controls, settings.probe_timeout)
    plan = build_plan(inputs.cluster.id, inputs.cluster.name, nodes, drain_host, force=force)
    plan.ups_id = inputs.ups_id
    plan.finales = inputs.finales
    if inputs.ups_id is not None:
        plan.nodes_up = sorted(await outages.answering(nodes, settings))
    return plan


async def plan_shutdown(
    session: Session, settings: Settings, cluster_id: int, *, force: bool, ups_id: int | None = None
) -> ShutdownPlan:
    """:func:`plan_for` the cluster ``cluster_id`` (``ups_id``: a shutdown for that UPS)."""
    return await plan_for(plan_inputs(session, settings, cluster_id, ups_id), settings, force=force)


def _finales(session: Session, settings: Settings, cluster_id: int, ups_id: int | None) -> list[UpsFinale]:
    """How a shutdown for ``ups_id`` ends (or, without one, for each UPS with shutdown rules here)."""
    if ups_id is not None:
        ids = [ups_id]
    else:
        ids = sorted(
            set(
                session.scalars(
                    select(PowerRule.ups_id).where(
                        PowerRule.cluster_id == cluster_id,
                        PowerRule.enabled.is_(True),
                        PowerRule.cluster_action.in_(SHUTDOWN_ACTIONS),
                    )
                )
            )
        )
    finales = []
    for row in (session.get(UPS, i) for i in ids):
        if row is None:
            continue
        host = settings.host_shutdown_command if settings.host_ups == row.name else []
        if row.power_cycle or host:
            marker = str(outages.marker_path(settings))
            finales.append(UpsFinale(row.id, row.name, row.power_cycle, tuple(host), marker))
    return finales


def last_duration(session: Session, cluster_id: int) -> float | None:
    """Seconds the cluster's last successful shutdown took (None: mko has not shut it down yet)."""
    operation = session.scalars(
        select(Operation)
        .where(
            Operation.target_type == "cluster",
            Operation.target_id == cluster_id,
            Operation.kind.in_(SHUTDOWN_KINDS),
            Operation.status == OperationStatus.SUCCEEDED,
            Operation.started_at.is_not(None),
            Operation.finished_at.is_not(None),
        )
        .order_by(Operation.id.desc())
        .limit(1)
    ).first()
    if operation is None or operation.started_at is None or operation.finished_at is None:
        return None
    return max(0.0, (operation.finished_at - operation.started_at).total_seconds())


def _check_idle(session: Session, cluster_id: int) -> None:
    """Refuse a second shutdown or recovery of a cluster while one runs (one a dead process left does not)."""
    ownership.close_orphaned(session)
    running = session.scalars(
        select(Operation).where(
            Operation.status == OperationStatus.RUNNING,
            Operation.target_type == "cluster",
            Operation.target_id == cluster_id,
            Operation.kind.in_([*SHUTDOWN_KINDS, RECOVER_KIND]),
        )
    ).first()
    if running is not None:
        raise ConflictError(
            f"operation {running.id} ({running.kind}) is already running on cluster {cluster_id}"
        )


# ------------------------------------------------------------------------------------ running


@dataclass
class PreparedShutdown:
    """A planned shutdown and its running operation (and its outage, for a shutdown for a UPS).

    ``nodes`` are detached rows (their columns serve SSH); ``power`` holds what the power drivers
    need, snapshotted while the session was open: a run never goes back to the database for it.
    """

    operation_id: int
    plan: ShutdownPlan
    nodes: dict[str, Node]
    power: dict[str, NodeSnapshot] = field(default_factory=dict)
    outage_id: int | None = None


def start_shutdown(
    session: Session,
    plan: ShutdownPlan,
    actor: Actor,
    *,
    check_idle: bool = True,
    event: str = "manual",
    event_id: int | None = None,
    reason: str = "",
) -> PreparedShutdown:
    """Record the shutdown operation with its plan (ConflictError if one already runs there).

    A plan for a UPS also opens (or carries on) the cluster's outage, before anything is touched.
    """
    if check_idle:
        _check_idle(session, plan.cluster_id)
    outage_id = None
    if plan.ups_id is not None:
        outage = outages.open_outage(
            session,
            ups_id=plan.ups_id,
            cluster_id=plan.cluster_id,
            event=event,
            event_id=event_id,
            reason=reason or f"shut down by {actor.name} for UPS {plan.ups_id}",
            nodes_up=plan.nodes_up,
        )
        outage_id = outage.id
    kind = SHUTDOWN_KINDS[1] if plan.force else SHUTDOWN_KINDS[0]
    parameters: dict[str, Any] = {"force": plan.force, "drain_host": plan.drain_host, "plan": plan.lines()}
    if outage_id is not None:
        parameters |= {"ups_id": plan.ups_id, "outage_id": outage_id}
    operation = start_operation(
        session,
        kind=kind,
        target_type="cluster",
        target_id=plan.cluster_id,
        actor=actor,
        parameters=parameters,
        summary=f"shutting down {len(plan.hostnames)} node(s)",
    )
    if outage_id is not None:
        outage = outages.get_outage(session, outage_id)
        outage.shutdown_operation_id = operation.id
        session.commit()
    nodes = {n.hostname: n for n in inventory.list_nodes(session, plan.cluster_id)}
    power = {hostname: NodeSnapshot.of(node) for hostname, node in nodes.items()}
    for node in nodes.values():
        session.expunge(node)  # read from other sessions and tasks while this one is gone
    return PreparedShutdown(operation.id, plan, nodes, power, outage_id)


@dataclass
class _Outcome:
    """What one SSH command did, or why it could not run."""

    status: OperationStatus
    message: str
    detail: dict[str, Any]
    result: CommandResult | None = None
    error: PowerError | None = None
    connected: bool = False  # the node answered on SSH and accepted our login

    @property
    def fatal(self) -> bool:
        """A host-key or login problem: retrying on that node cannot help."""
        return isinstance(self.error, FatalPowerError)


def _progress(name: str, node_id: int | None, message: str) -> tuple[str, str]:
    """("lab-n2", "stop: Stopped.") for a node's step "stop lab-n2"; ("cluster", "host keys: …") else."""
    if node_id is None:
        return "cluster", f"{name}: {message}"
    action, _, host = name.partition(" ")
    return host, f"{action}: {message}"


def _last_line(result: CommandResult) -> str:
    """The line that says how a command ended: the last of stdout, or of stderr when it failed."""
    first, second = (result.stdout, result.stderr) if result.ok else (result.stderr, result.stdout)
    text = first.strip() or second.strip() or f"exit {result.exit_status}"
    return text.splitlines()[-1]


class _StepLog:
    """Appends steps to one operation (one writer at a time) and reports each to the progress hook."""

    def __init__(
        self, session_factory: sessionmaker[Session], operation_id: int, on_step: StepHook | None
    ) -> None:
        self.session_factory = session_factory
        self.operation_id = operation_id
        self.on_step = on_step or (lambda _node, _text, _status: None)
        self.lock = asyncio.Lock()

    async def record(
        self,
        name: str,
        node_id: int | None,
        status: OperationStatus,
        message: str,
        detail: dict[str, Any],
        started: Any = None,
    ) -> None:
        async with self.lock:
            with self.session_factory() as session:
                operation = session.get_one(Operation, self.operation_id)
                record_step(
                    session,
                    operation,
                    name=name,
                    status=status,
                    node_id=node_id,
                    message=message,
                    detail=detail,
                    started_at=started,
                )
        self.on_step(*_progress(name, node_id, message), status)


class _Run(_StepLog):
    """Executes a plan, recording each step as it ends."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        prepared: PreparedShutdown,
        abort: asyncio.Event,
        on_step: StepHook | None,
    ) -> None:
        super().__init__(session_factory, prepared.operation_id, on_step)
        self.settings = settings
        self.prepared = prepared
        self.abort = abort
        self.failures: list[str] = []
        self.powered_off: list[str] = []  # confirmed off (a driver's query, or SSH went silent)
        self.unconfirmed: list[str] = []  # a power-off went out, or could not, and nothing confirmed it
        self.refused: dict[str, str] = {}  # hostname -> why nothing runs there
        self.skipped: list[str] = []  # steps not started because of the abort
        self.stop_reason: str | None = None
        self.endings: list[str] = []  # how a shutdown for a UPS ended: power cycle, host
        self.host_command: tuple[str, ...] = ()  # run after the operation is closed

    async def record_step(self, step: PlannedStep, outcome: _Outcome, started: Any) -> None:
        detail = outcome.detail | {"runs_on": step.runs_on}
        await self.record(
            f"{step.action} {step.hostname}", step.node_id, outcome.status, outcome.message, detail, started
        )

    # -------------------------------------------------------------- host keys

    async def preflight(self) -> None:
        """Check every node's host key first: a node presenting an unknown or other key is refused."""
        targets = [SshTarget.of(self.prepared.nodes[h], self.settings) for h in self.prepared.plan.hostnames]
        started = utcnow()
        # A quick TCP probe first: a node that is already off must not hold the whole shutdown for a
        # full SSH connect timeout (a sleeping host does not even answer ARP).
        probes = await asyncio.gather(
            *(probe_tcp(t.host, t.port, self.settings.probe_timeout) for t in targets)
        )
        answering = [t for t, probe in zip(targets, probes, strict=True) if probe.ok]
        found = await asyncio.gather(
            *(scan_host_key(t, self.settings) for t in answering), return_exceptions=True
        )
        verified = []
        unreachable = [t.name for t, probe in zip(targets, probes, strict=True) if not probe.ok]
        for target, info in zip(answering, found, strict=True):
            if isinstance(info, BaseException):
                if not isinstance(info, Exception):
                    raise info
                log.warning("shutdown: host key of %s not read: %s", target.label, info)
                unreachable.append(target.name)  # its own steps will find out what is wrong
                continue
            if info.status == "trusted":
                verified.append(target.name)
                continue
            error: SshError = (
                HostKeyChangedError(target, info.recorded, info.fingerprint)
                if info.status == "changed"
                else HostKeyUnknownError(target, info.fingerprint)
            )
            self.refused[target.name] = str(error)
        message = f"{len(verified)} verified"
        if self.refused:
            message += f", {len(self.refused)} refused ({', '.join(self.refused)})"
        if unreachable:
            message += f", {len(unreachable)} not answering ({', '.join(unreachable)})"
        status = OperationStatus.FAILED if self.refused else OperationStatus.SUCCEEDED
        detail = {"verified": verified, "refused": self.refused, "unreachable": unreachable}
        await self.record("host keys", None, status, message, detail, started)
        for hostname, why in self.refused.items():
            log.error("shutdown: %s refused: %s", hostname, why)
            self.failures.append(f"{hostname}: host key refused, nothing run there")
            node = self.prepared.nodes[hostname]
            await self.record(f"refuse {hostname}", node.id, OperationStatus.FAILED, why, {}, started)

    # -------------------------------------------------------------- steps

    async def _ssh(self, host: str, commands: Sequence[Sequence[str]], timeout: float) -> _Outcome:
        """Run commands on HOST in one connection; the later ones only when the one before asks for it."""
        target = SshTarget.of(self.prepared.nodes[host], self.settings)
        begun = time.monotonic()
        connected = False
        try:
            async with connect(target, self.settings) as connection:
                connected = True
                result = await connection.run(commands[0], sudo=True, timeout=timeout)
                detail = result.as_dict()
                for fallback in commands[1:]:
                    if not _wants_fallback(result):
                        break
                    notice = _last_line(result)
                    result = await connection.run(fallback, sudo=True, timeout=timeout)
                    detail = result.as_dict() | {"instead_of": detail["command"], "notice": notice}
        except PowerError as exc:
            duration = round(time.monotonic() - begun, 3)
            return _Outcome(
                OperationStatus.FAILED, str(exc), {"duration": duration}, error=exc, connected=connected
            )
        status = OperationStatus.SUCCEEDED if result.ok else OperationStatus.FAILED
        message = _last_line(result)
        if "instead_of" in detail:
            message += f" (ran `{detail['command']}` instead of `{detail['instead_of']}`)"
        return _Outcome(status, message, detail, result, connected=True)

    async def do(self, step: PlannedStep) -> bool:
        """Run one step; False when the node's chain cannot go on."""
        started = utcnow()
        settings = self.settings
        if step.runs_on in self.refused:
            outcome = _Outcome(
                OperationStatus.FAILED, f"not run: the host key of {step.runs_on} is refused", {}
            )
            self.failures.append(f"{step.action} {step.hostname}: {outcome.message}")
            await self.record_step(step, outcome, started)
            return step.action == "drain"
        if step.action == "drain":
            name = kube_name(self.prepared.nodes[step.hostname])
            argv = [
                "microk8s", "kubectl", "drain", name, "--ignore-daemonsets",
                "--delete-emptydir-data", f"--timeout={int(settings.drain_timeout)}s",
            ]  # fmt: skip
            outcome = await self._ssh(step.runs_on, [argv], settings.drain_timeout + 15)
            if outcome.status != OperationStatus.SUCCEEDED:
                self.failures.append(f"drain {step.hostname}: {outcome.message}")
            if outcome.result is not None and f"node/{name} cordoned" in outcome.result.stdout.splitlines():
                # Only a cordon of ours is undone by the recovery ("already cordoned" was someone else's).
                await self._mark_cordoned(step.node_id)
            await self.record_step(step, outcome, started)
            return True  # power is running out: a failed drain does not stop the shutdown
        if step.action == "stop":
            outcome = await self._ssh(
                step.hostname,
                [["microk8s", "stop"], ["snap", "stop", "microk8s", "--disable"]],
                settings.microk8s_stop_timeout,
            )
            if outcome.status != OperationStatus.SUCCEEDED:
                self.failures.append(f"stop {step.hostname}: {outcome.message}")
            await self.record_step(step, outcome, started)
            return not outcome.fatal
        return await self._power_off(step, started)

    async def _mark_cordoned(self, node_id: int) -> None:
        async with self.lock:
            with self.session_factory() as session:
                node = session.get(Node, node_id)
                if node is not None:
                    node.cordoned_by_mko = True
                    session.commit()

    async def _power_off(self, step: PlannedStep, started: Any) -> bool:
        """Power a node off; "succeeded" only when confirmed, else the step says why it is not."""
        begun = time.monotonic()
        if step.runs_on.startswith("driver:"):
            outcome = await self._driver_off(step)
        else:
            outcome = await self._ssh_off(step)
        outcome.detail["duration"] = round(time.monotonic() - begun, 3)
        ok = outcome.status == OperationStatus.SUCCEEDED
        if ok:
            self.powered_off.append(step.hostname)
            if self.prepared.outage_id is not None:  # durable at once: a restart must know it
                outages.mark_off(self.session_factory, self.prepared.outage_id, step.node_id)
        else:
            self.failures.append(f"poweroff {step.hostname}: {outcome.message}")
            if not outcome.detail.get("confirmed", True):
                self.unconfirmed.append(step.hostname)
        await self.record_step(step, outcome, started)
        return ok

    async def _driver_off(self, step: PlannedStep) -> _Outcome:
        """Soft-off through the node's power driver, confirmed by the driver's own power query."""
        schedule = WakeSchedule(retries=1, delay=0, wait=True, timeout=self.settings.poweroff_timeout)
        node = self.prepared.power[step.hostname]
        [result] = await power_off([node], schedule, driver_lookup(self.settings), soft=True)
        detail = result.as_dict()
        if result.state == OutcomeState.OFF:
            after = result.off_after or 0.0
            message = f"powered off: the {node.method.value} driver reports it off after {after:.1f} s"
            detail |= {"confirmed": True, "confirmed_by": f"{node.method.value} power query"}
            return _Outcome(OperationStatus.SUCCEEDED, message, detail)
        if result.state == OutcomeState.NOT_OFF:
            waited = f"{self.settings.poweroff_timeout:g} s"
            message = (
                f"unconfirmed: the {node.method.value} driver still does not report it off after {waited}"
            )
            return _Outcome(OperationStatus.FAILED, message, detail | {"confirmed": False})
        return _Outcome(OperationStatus.FAILED, result.describe(), detail)

    async def _ssh_off(self, step: PlannedStep) -> _Outcome:
        """``systemctl poweroff`` over SSH, confirmed only by SSH going from answering to silent."""
        node = self.prepared.nodes[step.hostname]
        outcome = await self._ssh(step.hostname, [["systemctl", "poweroff"], ["shutdown", "-h", "now"]], 30)
        if outcome.fatal:
            return outcome  # host key or login refused: nothing ran
        if not outcome.connected:
            # Never answering proves nothing: the node may be off already, or cut off from us.
            outcome.message = (
                f"unconfirmed: SSH did not answer, so mko cannot tell whether it is off ({outcome.message})"
            )
            outcome.detail["confirmed"] = False
            return outcome
        if outcome.result is not None and not outcome.result.ok:
            return outcome  # the node refused the command (e.g. sudo wants a password): still on
        # Accepted: it exited 0, or the connection dropped as the machine went down.
        accepted = "accepted it" if outcome.result is not None else f"lost the connection ({outcome.message})"
        command = outcome.detail.get("command", "systemctl poweroff")
        silent_after = await self._wait_off(node)
        if silent_after is None:
            waited = f"{self.settings.poweroff_timeout:g} s"
            outcome.message = f"unconfirmed: still answering on SSH {waited} after `{command}`"
            outcome.status = OperationStatus.FAILED
            outcome.detail["confirmed"] = False
            return outcome
        outcome.message = (
            f"powered off: SSH answered, {accepted} (`{command}`),"
            f" then stopped answering after {silent_after:.1f} s"
        )
        outcome.status = OperationStatus.SUCCEEDED
        outcome.detail |= {"confirmed": True, "confirmed_by": "SSH stopped answering"}
        return outcome

    async def _wait_off(self, node: Node) -> float | None:
        """Seconds until the node's SSH port stops answering, or None at the power-off timeout."""
        loop = asyncio.get_running_loop()
        begun = loop.time()
        deadline = begun + self.settings.poweroff_timeout
        while True:
            if not (await probe_tcp(node.ip_address, node.ssh_port, self.settings.probe_timeout)).ok:
                return loop.time() - begun
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(min(self.settings.probe_interval, 0.5))

    # -------------------------------------------------------------- order

    async def chain(self, steps: Sequence[PlannedStep]) -> None:
        """Run one node's steps in order; when aborted, the step in progress finishes and no other starts."""
        if steps and steps[0].hostname in self.refused:
            return
        for index, step in enumerate(steps):
            if self.abort.is_set():
                self.skipped.extend(f"{s.action} {s.hostname}" for s in steps[index:])
                return
            if not await self.do(step):
                return

    async def run(self) -> Operation:
        plan = self.prepared.plan
        try:
            await self.preflight()
            await asyncio.gather(*(self.chain(c) for c in plan.parallel))
            for chain in plan.serial:
                await self.chain(chain)
            if plan.ups_id is not None and not self.skipped and not self.abort.is_set():
                await self.end_for_ups(plan.ups_id)
        except Exception as exc:  # a bug must not leave the operation running forever
            log.exception("shutdown of cluster %s crashed", plan.cluster_id)
            self.failures.append(f"stopped by an internal error: {type(exc).__name__}: {exc}")
            return self.close()
        if self.skipped:
            reason = self.reason()
            await self.record(
                "stop early",
                None,
                OperationStatus.CANCELLED,
                f"{reason}; not started: {', '.join(self.skipped)}",
                {"skipped": self.skipped, "reason": reason},
            )
        operation = self.close()
        if self.host_command:
            await self.shutdown_host()  # the very last step: the operation and the outage are stored
        return operation

    # -------------------------------------------------------------- the end of a shutdown for a UPS

    async def end_for_ups(self, ups_id: int) -> None:
        """Every node is down: have the UPS power-cycle its load, then plan mko's own host, last."""
        finale = next((f for f in self.prepared.plan.finales if f.ups_id == ups_id), None)
        if finale is None:
            return
        started = utcnow()
        still_up = await self._still_up(ups_id)
        cycle: PowerCycle | None = None
        if finale.power_cycle:
            if still_up:
                cycle = PowerCycle("skipped", f"{still_up}: the UPS keeps its load on; nothing sent")
            else:
                with self.session_factory() as session:
                    row = session.get_one(UPS, ups_id)
                    box = SecretBox.from_settings(self.settings) if row.password_encrypted else None
                    target = target_of(row, box)
                cycle = await power_cycle(target, self.settings.ups_timeout)
            status = {"sent": OperationStatus.SUCCEEDED, "skipped": OperationStatus.CANCELLED}.get(
                cycle.outcome, OperationStatus.FAILED
            )
            await self.record(
                f"power-cycle {finale.ups_name}", None, status, cycle.message, cycle.as_dict(), started
            )
            self.endings.append(f"power cycle {cycle.outcome}: {cycle.message}")
            self._update_outage(power_cycle=cycle.as_dict())
        if not finale.host_command:
            return
        if still_up or (cycle is not None and not cycle.sent):
            why = still_up or "the UPS will not power-cycle, so nothing would start this host again"
            await self.record(
                "host shutdown", None, OperationStatus.CANCELLED, f"not run: {why}", {}, utcnow()
            )
            self._update_outage(host_shutdown={"ran": False, "why": why})
            return
        marker = outages.write_marker(
            self.settings,
            {
                "at": utcnow().isoformat(),
                "ups_id": ups_id,
                "ups": finale.ups_name,
                "outage_id": self.prepared.outage_id,
                "operation_id": self.prepared.operation_id,
                "command": list(finale.host_command),
                "power_cycle": cycle.as_dict() if cycle is not None else None,
            },
        )
        message = f"marker {marker} written; running {shlex.join(finale.host_command)}"
        detail = {"command": list(finale.host_command), "marker": str(marker)}
        await self.record("host shutdown", None, OperationStatus.SUCCEEDED, message, detail, utcnow())
        self._update_outage(host_shutdown=detail | {"ran": True, "at": utcnow().isoformat()})
        self.host_command = finale.host_command
        self.endings.append(f"host shutdown: {shlex.join(finale.host_command)}")

    async def _still_up(self, ups_id: int) -> str | None:
        """Which node of a cluster this UPS feeds (by its shutdown rules) still answers; None when none."""
        with self.session_factory() as session:
            clusters = {self.prepared.plan.cluster_id} | set(
                session.scalars(
                    select(PowerRule.cluster_id).where(
                        PowerRule.ups_id == ups_id,
                        PowerRule.enabled.is_(True),
                        PowerRule.cluster_action.in_(SHUTDOWN_ACTIONS),
                    )
                )
            )
            nodes = [n for c in sorted(clusters) for n in inventory.list_nodes(session, c)]
            for node in nodes:
                session.expunge(node)
        up = await outages.answering(nodes, self.settings)
        if not up:
            return None
        return f"{', '.join(n.hostname for n in nodes if n.id in up)} still answer(s)"

    def _update_outage(self, **fields: Any) -> None:
        if self.prepared.outage_id is None:
            return
        with self.session_factory() as session:
            outage = outages.get_outage(session, self.prepared.outage_id)
            for name, value in fields.items():
                setattr(outage, name, value)
            outage.updated_at = utcnow()
            session.commit()

    async def shutdown_host(self) -> None:
        """Run MKO_HOST_SHUTDOWN_COMMAND (an argument vector, never a shell); record how it returned."""
        argv = list(self.host_command)
        log.warning("shutting this host down for power: %s", shlex.join(argv))
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            async with asyncio.timeout(60):
                output, _ = await process.communicate()
            result = f"exited {process.returncode}: {output.decode(errors='replace').strip()[-300:]}"
        except (OSError, TimeoutError) as exc:
            result = f"could not run it: {exc}"
        log.warning("host shutdown command %s", result)
        with self.session_factory() as session:
            operation = session.get_one(Operation, self.prepared.operation_id)
            for step in operation.steps:
                if step.name == "host shutdown":
                    step.detail = {**step.detail, "result": result}
            session.commit()

    def reason(self) -> str:
        """Why the shutdown was asked to stop."""
        return self.stop_reason or str(getattr(self.abort, "reason", "") or "asked to stop")

    def close(self) -> Operation:
        total = len(self.prepared.plan.hostnames)
        summary = f"{len(self.powered_off)}/{total} node(s) powered off"
        if self.skipped:
            status = OperationStatus.CANCELLED
            summary += f"; stopped at a safe point: {self.reason()}"
        elif len(self.powered_off) == total and not self.failures:
            status = OperationStatus.SUCCEEDED
        elif self.powered_off:
            status = OperationStatus.PARTIAL
        else:
            status = OperationStatus.FAILED
        if self.failures:
            summary += "; " + "; ".join(self.failures)
        if self.endings:
            summary += "; " + "; ".join(self.endings)
        with self.session_factory() as session:
            operation = session.get_one(Operation, self.prepared.operation_id)
            result = {
                "powered_off": self.powered_off,
                "unconfirmed": self.unconfirmed,
                "failures": self.failures,
                "refused": sorted(self.refused),
                "skipped": self.skipped,
                "aborted": bool(self.skipped),
            }
            if self.prepared.outage_id is not None:
                result["outage_id"] = self.prepared.outage_id
                outage = outages.get_outage(session, self.prepared.outage_id)
                # Stopped early (mains back, or mko stopping): still shutting down, for the restore
                # or the next start to take on; otherwise the cluster is down for power.
                if not self.skipped and outage.phase == OutagePhase.SHUTTING_DOWN:
                    outages.set_phase(session, outage, OutagePhase.DOWN, f"down for power: {summary}")
            return finish_operation(session, operation, status=status, summary=summary, result=result)


def _wants_fallback(result: CommandResult) -> bool:
    """Whether the next command of a fallback list should run: worker notice, or no such command."""
    return result.exit_status == _COMMAND_NOT_FOUND or (result.ok and _WORKER_NOTICE in result.stdout)


async def _finish_even_if_cancelled(
    work: asyncio.Future[Operation], on_cancel: Callable[[], None]
) -> Operation:
    """Await WORK; when cancelled, ask it to stop at its next safe point, wait for that, then re-raise."""
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        on_cancel()
        while not work.done():
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                continue
        raise


async def run_shutdown(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedShutdown,
    *,
    abort: asyncio.Event | None = None,
    on_step: StepHook | None = None,
) -> Operation:
    """Carry out a shutdown plan; ``abort`` (its ``reason`` attribute, if any, says why) stops it safely."""
    stop = abort or asyncio.Event()
    runner = _Run(session_factory, settings, prepared, stop, on_step)

    def cancelled() -> None:
        if not stop.is_set():
            runner.stop_reason = "mko stopped while it ran"
            stop.set()

    return await _finish_even_if_cancelled(asyncio.ensure_future(runner.run()), cancelled)


# ------------------------------------------------------------------------------------ recovery


@dataclass
class PreparedRecovery:
    """A recovery and its running operation."""

    operation_id: int
    cluster_id: int
    nodes: list[Node]
    timeout: float
    # A person's recovery that succeeds closes the cluster's open outages; a restore closes its own.
    closes_outages: bool = True


def start_recovery(
    session: Session,
    cluster_id: int,
    actor: Actor,
    timeout: float,
    *,
    check_idle: bool = True,
    node_ids: Sequence[int] | None = None,
) -> PreparedRecovery:
    """Record a recovery operation for every node of the cluster (ConflictError if one already runs).

    ``node_ids``: recover only these (an outage's restore: the nodes that were up before it; a node an
    operator had switched off is neither started nor waited for).
    """
    inventory.get_cluster(session, cluster_id)
    nodes = inventory.list_nodes(session, cluster_id)
    if node_ids is not None:
        nodes = [n for n in nodes if n.id in set(node_ids)]
    if not nodes:
        raise ConflictError(f"cluster {cluster_id} has no nodes")
    if check_idle:
        _check_idle(session, cluster_id)
    operation = start_operation(
        session,
        kind=RECOVER_KIND,
        target_type="cluster",
        target_id=cluster_id,
        actor=actor,
        parameters={"timeout": timeout, "nodes": [n.hostname for n in nodes]},
        summary=f"recovering {len(nodes)} node(s)",
    )
    for node in nodes:
        session.expunge(node)
    return PreparedRecovery(operation.id, cluster_id, nodes, timeout)


def ready_nodes(kubectl_json: str) -> dict[str, dict[str, bool]]:
    """``{name: {"ready": …, "unschedulable": …}}`` from ``kubectl get nodes -o json``."""
    document = json.loads(kubectl_json)
    if not isinstance(document, dict):
        raise ValueError("not a Kubernetes List")
    found = {}
    for item in document.get("items", []):
        name = item.get("metadata", {}).get("name", "")
        conditions = item.get("status", {}).get("conditions", [])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        found[name] = {"ready": ready, "unschedulable": bool(item.get("spec", {}).get("unschedulable"))}
    return found


@dataclass
class _NodeReport:
    """How one node came back."""

    hostname: str
    ssh_after: float | None = None
    started: bool = False
    ready: bool = False
    uncordoned: bool | None = None  # None: mko had not cordoned it
    error: str | None = None


class _Recovery(_StepLog):
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        prepared: PreparedRecovery,
        on_step: StepHook | None,
    ) -> None:
        super().__init__(session_factory, prepared.operation_id, on_step)
        self.settings = settings
        self.prepared = prepared
        self.report = {n.hostname: _NodeReport(n.hostname) for n in prepared.nodes}
        self.problems: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.begin = self.loop.time()
        self.deadline = self.begin + prepared.timeout

    async def start_node(self, node: Node) -> None:
        """Wait for SSH, then ``microk8s start`` (``snap start microk8s --enable`` on --worker nodes)."""
        report = self.report[node.hostname]
        target = SshTarget.of(node, self.settings)
        started = utcnow()
        last_error = "never answered on SSH"
        while self.loop.time() < self.deadline:
            try:
                async with connect(target, self.settings) as connection:
                    up_after = self.loop.time() - self.begin
                    report.ssh_after = round(up_after, 1)
                    limit = min(
                        max(1.0, self.deadline - self.loop.time()), self.settings.microk8s_start_timeout
                    )
                    result = await connection.run(["microk8s", "start"], sudo=True, timeout=limit)
                    detail = result.as_dict()
                    if _wants_fallback(result):
                        notice = _last_line(result)
                        result = await connection.run(
                            ["snap", "start", "microk8s", "--enable"], sudo=True, timeout=limit
                        )
                        detail = result.as_dict() | {"instead_of": detail["command"], "notice": notice}
            except FatalPowerError as exc:
                last_error = str(exc)
                break  # retrying cannot fix a host key or a refused login
            except PowerError as exc:
                last_error = str(exc)
                await asyncio.sleep(min(self.settings.probe_interval, 0.5))
                continue
            if result.ok:
                report.started = True
                message = f"SSH up after {up_after:.1f}s; {shlex_name(result)} ran"
                await self.record(
                    f"start {node.hostname}", node.id, OperationStatus.SUCCEEDED, message, detail, started
                )
            else:
                report.error = f"`{result.command}` exited {result.exit_status}: {_last_line(result)}"
                self.problems.append(f"{node.hostname}: {report.error}")
                await self.record(
                    f"start {node.hostname}", node.id, OperationStatus.FAILED, report.error, detail, started
                )
            return
        report.error = last_error
        self.problems.append(f"{node.hostname}: {last_error}")
        await self.record(f"start {node.hostname}", node.id, OperationStatus.FAILED, last_error, {}, started)

    async def wait_ready(self) -> tuple[Node | None, dict[str, dict[str, bool]]]:
        """Poll ``kubectl get nodes -o json`` on a started control plane until every node is Ready."""
        names = {kube_name(n) for n in self.prepared.nodes}
        controls = [
            n
            for n in self.prepared.nodes
            if n.role == NodeRole.CONTROL_PLANE and self.report[n.hostname].started
        ]
        seen: dict[str, dict[str, bool]] = {}
        if not controls:
            self.problems.append("no control plane started: nobody can ask the API whether nodes are Ready")
            return None, seen
        argv = ["microk8s", "kubectl", "get", "nodes", "-o", "json"]
        answered: Node | None = None
        while True:
            for control in controls:
                try:
                    async with connect(SshTarget.of(control, self.settings), self.settings) as connection:
                        result = await connection.run(argv, sudo=True, timeout=30)
                    seen = ready_nodes(result.stdout) if result.ok else seen
                except (PowerError, ValueError):
                    continue
                if result.ok:
                    answered = control
                    break
            if names and all(seen.get(name, {}).get("ready") for name in names):
                return answered, seen
            if self.loop.time() >= self.deadline:
                return answered, seen
            await asyncio.sleep(min(self.settings.probe_interval, 0.5))

    async def uncordon(self, control: Node) -> None:
        """Uncordon the nodes this orchestrator cordoned (and only those), through CONTROL."""
        with self.session_factory() as session:
            ours = [
                n.id for n in inventory.list_nodes(session, self.prepared.cluster_id) if n.cordoned_by_mko
            ]
        nodes = [n for n in self.prepared.nodes if n.id in ours]
        if not nodes:
            return
        try:
            async with connect(SshTarget.of(control, self.settings), self.settings) as connection:
                for node in nodes:
                    started = utcnow()
                    argv = ["microk8s", "kubectl", "uncordon", kube_name(node)]
                    result = await connection.run(argv, sudo=True, timeout=30)
                    report = self.report[node.hostname]
                    report.uncordoned = result.ok
                    if result.ok:
                        await self._forget_cordon(node.id)
                        status = OperationStatus.SUCCEEDED
                    else:
                        self.problems.append(f"uncordon {node.hostname}: {_last_line(result)}")
                        status = OperationStatus.FAILED
                    await self.record(
                        f"uncordon {node.hostname}",
                        node.id,
                        status,
                        _last_line(result),
                        result.as_dict(),
                        started,
                    )
        except PowerError as exc:
            self.problems.append(f"uncordon: {exc}")
            await self.record("uncordon", None, OperationStatus.FAILED, str(exc), {})

    async def _forget_cordon(self, node_id: int) -> None:
        async with self.lock:
            with self.session_factory() as session:
                row = session.get(Node, node_id)
                if row is not None:
                    row.cordoned_by_mko = False
                    session.commit()

    async def run(self) -> Operation:
        try:
            return await self._run()
        except Exception as exc:  # a bug must not leave the operation running forever
            log.exception("recovery of cluster %s crashed", self.prepared.cluster_id)
            self.problems.append(f"stopped by an internal error: {type(exc).__name__}: {exc}")
            return self.close()

    async def _run(self) -> Operation:
        await asyncio.gather(*(self.start_node(node) for node in self.prepared.nodes))
        started = utcnow()
        control, seen = await self.wait_ready()
        for node in self.prepared.nodes:
            self.report[node.hostname].ready = bool(seen.get(kube_name(node), {}).get("ready"))
        not_ready = [h for h, r in self.report.items() if not r.ready]
        after = round(self.loop.time() - self.begin, 1)
        if not_ready:
            message = f"not Ready before the timeout: {', '.join(not_ready)}"
            self.problems.append(message)
            await self.record(
                "all nodes Ready", None, OperationStatus.FAILED, message, {"nodes": seen}, started
            )
        else:
            message = f"{len(self.report)} node(s) Ready after {after}s"
            await self.record(
                "all nodes Ready", None, OperationStatus.SUCCEEDED, message, {"nodes": seen}, started
            )
        if control is not None:
            await self.uncordon(control)
        return self.close()

    def close(self, cancelled: bool = False) -> Operation:
        total = len(self.report)
        counts = [sum(1 for r in self.report.values() if test(r)) for test in (_started, _ready)]
        uncordoned = sorted(h for h, r in self.report.items() if r.uncordoned)
        summary = f"{counts[0]}/{total} started, {counts[1]}/{total} Ready, {len(uncordoned)} uncordoned"
        if cancelled:
            status = OperationStatus.CANCELLED
            summary = f"cancelled: mko stopped while it ran; {summary}"
        elif counts == [total, total] and not self.problems:
            status = OperationStatus.SUCCEEDED
        else:
            status = OperationStatus.PARTIAL if counts[0] else OperationStatus.FAILED
        if self.problems:
            summary += "; " + "; ".join(self.problems)
        result: dict[str, Any] = {
            "nodes": {h: r.__dict__ for h, r in self.report.items()},
            "started": sorted(h for h, r in self.report.items() if r.started),
            "not_ready": sorted(h for h, r in self.report.items() if not r.ready),
            "uncordoned": uncordoned,
            "problems": self.problems,
        }
        with self.session_factory() as session:
            operation = session.get_one(Operation, self.prepared.operation_id)
            if status == OperationStatus.SUCCEEDED and self.prepared.closes_outages:
                result["outages_closed"] = outages.close_for_cluster(
                    session,
                    self.prepared.cluster_id,
                    f"closed: the cluster was recovered by {operation.actor} (operation {operation.id})",
                )
            return finish_operation(session, operation, status=status, summary=summary, result=result)


def _started(report: _NodeReport) -> bool:
    return report.started


def _ready(report: _NodeReport) -> bool:
    return report.ready


def shlex_name(result: CommandResult) -> str:
    """``microk8s start`` or ``snap start microk8s --enable``: the command that did the work."""
    return " ".join(a for a in result.argv if a not in ("sudo", "-n", "--"))


async def run_recovery(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedRecovery,
    on_step: StepHook | None = None,
) -> Operation:
    """Start MicroK8s everywhere, wait until every node is Ready, uncordon what mko cordoned."""
    recovery = _Recovery(session_factory, settings, prepared, on_step)
    try:
        return await recovery.run()
    except asyncio.CancelledError:
        recovery.close(cancelled=True)
        raise


# ------------------------------------------------------------------------------------ schedules


async def _scheduled_shutdown(context: schedules.RunContext, run: schedules.PreparedRun) -> Operation:
    """A schedule's shutdown: plan now, run it as its own operation, link it from the schedule's."""
    factory, settings = context.session_factory, context.settings
    with factory() as session:
        operation = session.get_one(Operation, run.operation_id)
        cluster_id = operation.target_id or 0
        try:
            plan = await plan_shutdown(session, settings, cluster_id, force=bool(run.options.get("force")))
            prepared = start_shutdown(session, plan, run.actor)
        except ConflictError as exc:
            record_step(
                session, operation, name="shutdown", status=OperationStatus.CANCELLED, message=str(exc)
            )
            return finish_operation(
                session, operation, status=OperationStatus.CANCELLED, summary=f"not started: {exc}"
            )
        step_id = record_step(
            session,
            operation,
            name="shutdown",
            status=OperationStatus.RUNNING,
            message=f"shutting down in operation #{prepared.operation_id}",
            detail={"operation_id": prepared.operation_id},
        ).id
    done = await run_shutdown(factory, settings, prepared)
    with factory() as session:
        operation = session.get_one(Operation, run.operation_id)
        step = session.get_one(OperationStep, step_id)
        step.status, step.message, step.finished_at = done.status, f"#{done.id}: {done.summary}", utcnow()
        return finish_operation(
            session,
            operation,
            status=done.status,
            summary=f"shutdown #{done.id}: {done.summary}",
            result={"shutdown_operation_id": done.id},
        )


schedules.register_action(ScheduleAction.SHUTDOWN, _scheduled_shutdown)
