"""Graceful cluster shutdown in the order MicroK8s needs, and verified recovery after power returns.

Shutdown (``graceful_shutdown``; ``force_shutdown`` skips the drains)::

    1. workers, all at once, each: drain (run on the drain host) → microk8s stop → power off
    2. control-plane nodes, one at a time: drain → microk8s stop → power off
    3. the drain host last of all: microk8s stop → power off

Losing two of three dqlite voters loses quorum, so control planes go one at a time and last. A failed
drain is recorded and the shutdown goes on: the battery is running out. Every command has a timeout.

Recovery: wait for SSH on every node → ``microk8s start`` on each (``microk8s stop`` disables the
services across reboots) → wait until ``microk8s kubectl get nodes -o json`` shows *every* inventory
node Ready by name (``microk8s status --wait-ready`` passes when any one node is Ready) → uncordon the
nodes this orchestrator drained (they stay cordoned after a reboot).

Power race: a running shutdown can be asked to stop (``abort``); it finishes the step it is in, and a
control plane it has begun to stop is taken all the way down (never left half-stopped), then it ends
with status ``cancelled`` so the wake and recovery can run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from mko import inventory, ssh
from mko.db.models import Node, NodeRole, Operation, OperationStatus
from mko.errors import ConflictError, PowerError
from mko.operations import Actor, finish_operation, record_step, start_operation
from mko.power import driver_class, driver_lookup
from mko.power.base import NodeSnapshot, OutcomeState, WakeSchedule, power_off
from mko.probe import probe_tcp
from mko.settings import Settings

__all__ = [
    "PlannedStep",
    "ShutdownPlan",
    "plan_shutdown",
    "run_recovery",
    "run_shutdown",
    "start_recovery",
    "start_shutdown",
]

log = logging.getLogger("mko.shutdown")

StepHook = Callable[[str, str, OperationStatus], None]


@dataclass(frozen=True)
class PlannedStep:
    """One action on one node, and where its command runs."""

    node_id: int
    hostname: str
    action: str  # drain | stop | poweroff
    runs_on: str  # hostname whose SSH runs the command, or "driver:<name>"

    def describe(self) -> str:
        """One line for the plan."""
        where = f"via {self.runs_on}" if self.runs_on != self.hostname else "on itself"
        return f"{self.action:<8} {self.hostname} ({where})"


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

    def lines(self) -> list[str]:
        """The plan in words, in execution order (what --dry-run prints)."""
        mode = "force shutdown (no drains)" if self.force else "graceful shutdown"
        out = [
            f"{mode} of cluster {self.cluster_id} ({self.cluster_name}); drain host: {self.drain_host or '—'}"
        ]
        out += [f"note: {note}" for note in self.notes]
        if self.parallel:
            out.append("1. workers, in parallel:")
            for chain in self.parallel:
                out.extend(f"   {step.describe()}" for step in chain)
        for index, chain in enumerate(self.serial, start=2):
            out.append(f"{index}. then, alone:")
            out.extend(f"   {step.describe()}" for step in chain)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the API and the operation's parameters."""
        return {
            "force": self.force,
            "drain_host": self.drain_host,
            "parallel": [[s.__dict__ for s in chain] for chain in self.parallel],
            "serial": [[s.__dict__ for s in chain] for chain in self.serial],
            "notes": self.notes,
            "lines": self.lines(),
        }


def _power_path(node: Node) -> str:
    """``ssh`` for an OS power-off, or ``driver:<label>`` where the node's driver can soft-off."""
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


async def plan_shutdown(
    session: Session, settings: Settings, cluster_id: int, *, force: bool
) -> ShutdownPlan:
    """Work out the order; the drain host is the first reachable control plane."""
    cluster = inventory.get_cluster(session, cluster_id)
    nodes = inventory.list_nodes(session, cluster_id)
    if not nodes:
        raise ConflictError(f"cluster {cluster_id} has no nodes")
    controls = [n for n in nodes if n.role == NodeRole.CONTROL_PLANE]
    workers = [n for n in nodes if n.role != NodeRole.CONTROL_PLANE]
    drain_host = await _reachable_control_plane(controls, settings.probe_timeout)
    plan = ShutdownPlan(cluster_id, cluster.name, force, drain_host.hostname if drain_host else None)
    drains = not force and drain_host is not None
    if not force and drain_host is None:
        plan.notes.append("no control plane answers on SSH: nodes cannot be drained, only stopped")

    def chain(node: Node, *, drain: bool) -> list[PlannedStep]:
        steps = []
        if drain and drain_host is not None:
            steps.append(PlannedStep(node.id, node.hostname, "drain", drain_host.hostname))
        steps.append(PlannedStep(node.id, node.hostname, "stop", node.hostname))
        steps.append(PlannedStep(node.id, node.hostname, "poweroff", _power_path(node)))
        return steps

    plan.parallel = [chain(n, drain=drains) for n in sorted(workers, key=lambda n: n.id)]
    others = [n for n in sorted(controls, key=lambda n: n.id) if drain_host is None or n.id != drain_host.id]
    plan.serial = [chain(n, drain=drains) for n in others]
    if drain_host is not None:
        plan.serial.append(chain(drain_host, drain=False))
    return plan


# ------------------------------------------------------------------------------------ running


@dataclass
class PreparedShutdown:
    """A planned shutdown and its running operation."""

    operation_id: int
    plan: ShutdownPlan
    nodes: dict[str, Node]


def start_shutdown(session: Session, plan: ShutdownPlan, actor: Actor) -> PreparedShutdown:
    """Record the shutdown operation with its plan."""
    kind = "cluster_force_shutdown" if plan.force else "cluster_shutdown"
    operation = start_operation(
        session,
        kind=kind,
        target_type="cluster",
        target_id=plan.cluster_id,
        actor=actor,
        parameters={"force": plan.force, "plan": plan.lines()},
        summary="shutting down",
    )
    nodes = {n.hostname: n for n in inventory.list_nodes(session, plan.cluster_id)}
    return PreparedShutdown(operation.id, plan, nodes)


class _Run:
    """Executes a plan, recording each step as it ends."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        prepared: PreparedShutdown,
        abort: asyncio.Event,
        on_step: StepHook | None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.prepared = prepared
        self.abort = abort
        self.on_step = on_step or (lambda _node, _text, _status: None)
        self.lock = asyncio.Lock()  # one writer of the operation at a time
        self.failures: list[str] = []
        self.powered_off: list[str] = []

    async def record(
        self, step: PlannedStep, status: OperationStatus, message: str, detail: dict[str, Any]
    ) -> None:
        async with self.lock:
            with self.session_factory() as session:
                operation = session.get_one(Operation, self.prepared.operation_id)
                record_step(
                    session,
                    operation,
                    name=f"{step.action} {step.hostname}",
                    status=status,
                    node_id=step.node_id,
                    message=message,
                    detail=detail | {"runs_on": step.runs_on},
                )
                if step.action == "drain":
                    node = session.get(Node, step.node_id)
                    if node is not None:
                        node.cordoned_by_mko = True  # drain cordons first, even when the eviction fails
                        session.commit()
        self.on_step(step.hostname, f"{step.action}: {message}", status)

    async def _ssh_run(
        self, step: PlannedStep, argv: list[str], timeout: float
    ) -> tuple[OperationStatus, str, dict[str, Any]]:
        target_node = self.prepared.nodes[step.runs_on]
        target = ssh.SshTarget.of(target_node, self.settings)
        started = time.monotonic()
        try:
            async with ssh.connect(target, self.settings) as connection:
                result = await connection.run(argv, sudo=True, timeout=timeout)
        except PowerError as exc:
            return OperationStatus.FAILED, str(exc), {"duration": round(time.monotonic() - started, 3)}
        status = OperationStatus.SUCCEEDED if result.ok else OperationStatus.FAILED
        text = (result.stdout.strip() or result.stderr.strip() or f"exit {result.exit_status}").splitlines()[
            -1
        ]
        return status, text, result.as_dict()

    async def do(self, step: PlannedStep) -> bool:
        """Run one step; False when the node's chain should not go on."""
        settings = self.settings
        if step.action == "drain":
            argv = [
                "microk8s", "kubectl", "drain", step.hostname, "--ignore-daemonsets",
                "--delete-emptydir-data", f"--timeout={int(settings.drain_timeout)}s",
            ]  # fmt: skip
            status, message, detail = await self._ssh_run(step, argv, settings.drain_timeout + 15)
            if status != OperationStatus.SUCCEEDED:
                self.failures.append(f"drain {step.hostname}: {message}")
            await self.record(step, status, message, detail)
            return True  # power is running out: a failed drain does not stop the shutdown
        if step.action == "stop":
            status, message, detail = await self._ssh_run(
                step, ["microk8s", "stop"], settings.microk8s_stop_timeout
            )
            if status != OperationStatus.SUCCEEDED:
                self.failures.append(f"stop {step.hostname}: {message}")
            await self.record(step, status, message, detail)
            return True
        return await self._power_off(step)

    async def _power_off(self, step: PlannedStep) -> bool:
        node = self.prepared.nodes[step.hostname]
        started = time.monotonic()
        if step.runs_on.startswith("driver:"):
            schedule = WakeSchedule(retries=1, delay=0, wait=True, timeout=self.settings.poweroff_timeout)
            [outcome] = await power_off(
                [NodeSnapshot.of(node)], schedule, driver_lookup(self.settings), soft=True
            )
            ok = outcome.state == OutcomeState.OFF
            message, detail = outcome.describe(), outcome.as_dict()
        else:
            _, message, detail = await self._ssh_run(step, ["systemctl", "poweroff"], 30)
            # The connection may drop as the machine goes down: what counts is that SSH stops answering.
            ok = await self._wait_off(node)
            message = "powered off (SSH stopped answering)" if ok else f"still answering on SSH ({message})"
        detail = detail | {"duration": round(time.monotonic() - started, 3)}
        if ok:
            self.powered_off.append(step.hostname)
        else:
            self.failures.append(f"poweroff {step.hostname}: {message}")
        await self.record(step, OperationStatus.SUCCEEDED if ok else OperationStatus.FAILED, message, detail)
        return ok

    async def _wait_off(self, node: Node) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.poweroff_timeout
        while loop.time() < deadline:
            if not (await probe_tcp(node.ip_address, node.ssh_port, self.settings.probe_timeout)).ok:
                return True
            await asyncio.sleep(self.settings.probe_interval)
        return False

    async def chain(self, steps: Sequence[PlannedStep], *, finish_once_started: bool) -> None:
        """Run one node's steps; stop between steps when aborted (unless told to finish)."""
        for index, step in enumerate(steps):
            begun = index > 0 and steps[index - 1].action != "drain"  # microk8s stop already ran
            if self.abort.is_set() and not (finish_once_started and begun):
                return
            if not await self.do(step):
                return

    async def run(self) -> Operation:
        plan = self.prepared.plan
        await asyncio.gather(*(self.chain(c, finish_once_started=False) for c in plan.parallel))
        for chain in plan.serial:
            if self.abort.is_set():
                break
            # NOTE: a control plane whose microk8s was stopped is taken all the way down, so an
            # aborted shutdown never leaves a half-stopped dqlite voter behind.
            await self.chain(chain, finish_once_started=True)
        return self.close()

    def close(self) -> Operation:
        total = len(
            {
                s.hostname
                for chain in (*self.prepared.plan.parallel, *self.prepared.plan.serial)
                for s in chain
            }
        )
        summary = f"{len(self.powered_off)}/{total} node(s) powered off"
        if self.abort.is_set():
            status, summary = OperationStatus.CANCELLED, summary + "; stopped early: power returned"
        elif len(self.powered_off) == total and not self.failures:
            status = OperationStatus.SUCCEEDED
        elif self.powered_off:
            status = OperationStatus.PARTIAL
        else:
            status = OperationStatus.FAILED
        if self.failures:
            summary += "; " + "; ".join(self.failures)
        with self.session_factory() as session:
            operation = session.get_one(Operation, self.prepared.operation_id)
            result = {
                "powered_off": self.powered_off,
                "failures": self.failures,
                "aborted": self.abort.is_set(),
            }
            return finish_operation(session, operation, status=status, summary=summary, result=result)


async def run_shutdown(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedShutdown,
    *,
    abort: asyncio.Event | None = None,
    on_step: StepHook | None = None,
) -> Operation:
    """Carry out a shutdown plan; ``abort`` stops it safely between steps."""
    return await _Run(session_factory, settings, prepared, abort or asyncio.Event(), on_step).run()


# ------------------------------------------------------------------------------------ recovery


@dataclass
class PreparedRecovery:
    """A recovery and its running operation."""

    operation_id: int
    cluster_id: int
    nodes: list[Node]
    timeout: float


def start_recovery(session: Session, cluster_id: int, actor: Actor, timeout: float) -> PreparedRecovery:
    """Record a recovery operation for every node of the cluster."""
    inventory.get_cluster(session, cluster_id)
    nodes = inventory.list_nodes(session, cluster_id)
    if not nodes:
        raise ConflictError(f"cluster {cluster_id} has no nodes")
    operation = start_operation(
        session,
        kind="cluster_recover",
        target_type="cluster",
        target_id=cluster_id,
        actor=actor,
        parameters={"timeout": timeout},
        summary=f"recovering {len(nodes)} node(s)",
    )
    return PreparedRecovery(operation.id, cluster_id, nodes, timeout)


def ready_nodes(kubectl_json: str) -> dict[str, dict[str, bool]]:
    """``{name: {"ready": …, "unschedulable": …}}`` from ``kubectl get nodes -o json``."""
    document = json.loads(kubectl_json)
    found = {}
    for item in document.get("items", []):
        name = item.get("metadata", {}).get("name", "")
        conditions = item.get("status", {}).get("conditions", [])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        found[name] = {"ready": ready, "unschedulable": bool(item.get("spec", {}).get("unschedulable"))}
    return found


class _Recovery:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        prepared: PreparedRecovery,
        on_step: StepHook | None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.prepared = prepared
        self.on_step = on_step or (lambda _node, _text, _status: None)
        self.lock = asyncio.Lock()
        self.started: dict[str, float] = {}
        self.problems: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + prepared.timeout
        self.begin = self.loop.time()

    async def record(
        self, node: Node | None, name: str, status: OperationStatus, message: str, detail: dict[str, Any]
    ) -> None:
        async with self.lock:
            with self.session_factory() as session:
                operation = session.get_one(Operation, self.prepared.operation_id)
                record_step(
                    session,
                    operation,
                    name=name,
                    status=status,
                    node_id=node.id if node else None,
                    message=message,
                    detail=detail,
                )
        self.on_step(node.hostname if node else "cluster", f"{name}: {message}", status)

    async def start_node(self, node: Node) -> None:
        """Wait for SSH, then `microk8s start`."""
        target = ssh.SshTarget.of(node, self.settings)
        last_error = "never answered"
        while self.loop.time() < self.deadline:
            try:
                async with ssh.connect(target, self.settings) as connection:
                    up_after = self.loop.time() - self.begin
                    remaining = max(1.0, self.deadline - self.loop.time())
                    result = await connection.run(
                        ["microk8s", "start"],
                        sudo=True,
                        timeout=min(remaining, self.settings.microk8s_start_timeout),
                    )
            except (ssh.HostKeyChangedError, ssh.HostKeyUnknownError, ssh.SshAuthError) as exc:
                last_error = str(exc)
                break  # retrying cannot fix a key or login problem
            except PowerError as exc:
                last_error = str(exc)
                await asyncio.sleep(self.settings.probe_interval)
                continue
            if result.ok:
                self.started[node.hostname] = up_after
                await self.record(
                    node,
                    f"start {node.hostname}",
                    OperationStatus.SUCCEEDED,
                    f"SSH up after {up_after:.1f}s; microk8s started",
                    result.as_dict(),
                )
            else:
                last_error = result.stderr.strip() or f"microk8s start exited {result.exit_status}"
                self.problems.append(f"{node.hostname}: {last_error}")
                await self.record(
                    node, f"start {node.hostname}", OperationStatus.FAILED, last_error, result.as_dict()
                )
            return
        self.problems.append(f"{node.hostname}: {last_error}")
        await self.record(node, f"start {node.hostname}", OperationStatus.FAILED, last_error, {})

    async def wait_ready(self) -> tuple[Node | None, dict[str, dict[str, bool]]]:
        """Poll `kubectl get nodes` from a started control plane until every inventory node is Ready."""
        names = {n.hostname for n in self.prepared.nodes}
        controls = [
            n for n in self.prepared.nodes if n.role == NodeRole.CONTROL_PLANE and n.hostname in self.started
        ]
        seen: dict[str, dict[str, bool]] = {}
        if not controls:
            return None, seen
        while self.loop.time() < self.deadline:
            for control in controls:
                try:
                    async with ssh.connect(
                        ssh.SshTarget.of(control, self.settings), self.settings
                    ) as connection:
                        result = await connection.run(
                            ["microk8s", "kubectl", "get", "nodes", "-o", "json"], sudo=True, timeout=30
                        )
                except PowerError:
                    continue
                if result.ok:
                    try:
                        seen = ready_nodes(result.stdout)
                    except ValueError:
                        continue
                    if all(seen.get(name, {}).get("ready") for name in names):
                        return control, seen
                    break
            await asyncio.sleep(self.settings.probe_interval)
        return (controls[0] if controls else None), seen

    async def run(self) -> Operation:
        await asyncio.gather(*(self.start_node(node) for node in self.prepared.nodes))
        control, seen = await self.wait_ready()
        names = sorted(n.hostname for n in self.prepared.nodes)
        not_ready = [name for name in names if not seen.get(name, {}).get("ready")]
        ready_after = round(self.loop.time() - self.begin, 1)
        if not_ready:
            message = f"not Ready before the timeout: {', '.join(not_ready)}"
            self.problems.append(message)
            await self.record(None, "all nodes Ready", OperationStatus.FAILED, message, {"nodes": seen})
        else:
            await self.record(
                None,
                "all nodes Ready",
                OperationStatus.SUCCEEDED,
                f"{len(names)} node(s) Ready after {ready_after}s",
                {"nodes": seen},
            )
        uncordoned = await self.uncordon(control) if control is not None else []
        return self.close(not_ready, uncordoned)

    async def uncordon(self, control: Node) -> list[str]:
        """Uncordon the nodes this orchestrator drained (and only those)."""
        with self.session_factory() as session:
            drained = [
                n.hostname
                for n in inventory.list_nodes(session, self.prepared.cluster_id)
                if n.cordoned_by_mko
            ]
        done = []
        for name in drained:
            try:
                async with ssh.connect(ssh.SshTarget.of(control, self.settings), self.settings) as connection:
                    result = await connection.run(
                        ["microk8s", "kubectl", "uncordon", name], sudo=True, timeout=30
                    )
            except PowerError as exc:
                self.problems.append(f"uncordon {name}: {exc}")
                continue
            node = next(n for n in self.prepared.nodes if n.hostname == name)
            if result.ok:
                done.append(name)
                with self.session_factory() as session:
                    row = session.get(Node, node.id)
                    if row is not None:
                        row.cordoned_by_mko = False
                        session.commit()
                await self.record(
                    node,
                    f"uncordon {name}",
                    OperationStatus.SUCCEEDED,
                    result.stdout.strip(),
                    result.as_dict(),
                )
            else:
                self.problems.append(f"uncordon {name}: {result.stderr.strip()}")
                await self.record(
                    node, f"uncordon {name}", OperationStatus.FAILED, result.stderr.strip(), result.as_dict()
                )
        return done

    def close(self, not_ready: list[str], uncordoned: list[str]) -> Operation:
        total = len(self.prepared.nodes)
        ready = total - len(not_ready)
        summary = f"{len(self.started)}/{total} started, {ready}/{total} Ready, {len(uncordoned)} uncordoned"
        if self.problems:
            summary += "; " + "; ".join(self.problems)
        ok = len(self.started) == total and not not_ready and not self.problems
        status = (
            OperationStatus.SUCCEEDED
            if ok
            else (OperationStatus.PARTIAL if self.started else OperationStatus.FAILED)
        )
        with self.session_factory() as session:
            operation = session.get_one(Operation, self.prepared.operation_id)
            result = {
                "started": self.started,
                "not_ready": not_ready,
                "uncordoned": uncordoned,
                "problems": self.problems,
            }
            return finish_operation(session, operation, status=status, summary=summary, result=result)


async def run_recovery(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedRecovery,
    on_step: StepHook | None = None,
) -> Operation:
    """Start MicroK8s everywhere, wait until every node is Ready, uncordon what mko drained."""
    return await _Recovery(session_factory, settings, prepared, on_step).run()
