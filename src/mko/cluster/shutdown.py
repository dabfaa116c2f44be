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

A shutdown *for a UPS* (a rule's, or ``--ups``) is an outage (mko.ups.outages): recorded before the first
step with the nodes that answered, each confirmed power-off added as it happens. Once every node is
confirmed off it ends like a NUT primary: ``4.`` the UPS power-cycles its load (mko.ups.power_cycle;
never when mains has returned), ``5.`` mko's own host is shut down last (``MKO_HOST_UPS``,
``MKO_HOST_SHUTDOWN_COMMAND``, after a marker file), so the next start knows why it was down.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.cluster import backups, quiesce
from mko.cluster.drains import BlockingBudget, blocking_budgets, parse_drain
from mko.cluster.microk8s import drain_argv, kube_name, kubectl_json, run_once_snapd_is_free
from mko.cluster.plan import SHUTDOWN_ACTIONS, ShutdownPlan, _check_idle
from mko.cluster.preflight import CheckReport, CheckTarget, Finding, check_nodes
from mko.cluster.steps import _finish_even_if_cancelled, _last_line, _StepLog, _wants_fallback
from mko.inventory.nodes import list_nodes
from mko.inventory.snapshots import snapshots
from mko.operations.kinds import NODE_DRAIN_KIND, SHUTDOWN_KINDS
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.outages import OutagePhase
from mko.platform.db.models.rules import PowerRule
from mko.platform.db.models.ups import UPS
from mko.platform.errors import (
    FatalPowerError,
    HostKeyChangedError,
    HostKeyUnknownError,
    PowerError,
    SshError,
)
from mko.platform.secrets import SecretBox
from mko.platform.settings import Settings
from mko.power.base import NodeSnapshot, OutcomeState, WakeSchedule, power_off
from mko.power.probe import probe_tcp
from mko.power.registry import DRIVERS
from mko.ssh.client import CommandResult, SshSession, SshTarget, connect
from mko.ssh.host_keys import scan_host_key
from mko.ups import outages
from mko.ups.power_cycle import PowerCycle, power_cycle
from mko.ups.service import target_of

if TYPE_CHECKING:
    from mko.cluster.plan import PlannedStep
    from mko.cluster.steps import StepHook

__all__ = ["PreparedShutdown", "run_shutdown", "start_shutdown"]

log = logging.getLogger("mko.shutdown")

_MAX_PODS_LOOKED_UP = 20  # a drain refused for more pods names the budgets of the first ones


def _last_line_of(outcome: _Outcome) -> str:
    return _last_line(outcome.result) if outcome.result is not None else outcome.message


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
    target: tuple[str, int] = ("cluster", plan.cluster_id)
    summary = f"shutting down {len(plan.hostnames)} node(s)"
    if not plan.whole_cluster:
        kind, summary = NODE_DRAIN_KIND, f"draining {plan.hostnames[0]}"
        target = ("node", plan.parallel[0][0].node_id)
    operation = start_operation(
        session,
        kind=kind,
        target_type=target[0],
        target_id=target[1],
        actor=actor,
        parameters=parameters,
        summary=summary,
    )
    if outage_id is not None:
        outage = outages.get_outage(session, outage_id)
        outage.shutdown_operation_id = operation.id
        session.commit()
    nodes = {n.hostname: n for n in list_nodes(session, plan.cluster_id)}
    power = dict(zip(nodes, snapshots(session, list(nodes.values())), strict=True))
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


class _Run(_StepLog):
    """Executes a plan, recording each step as it ends."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        prepared: PreparedShutdown,
        abort: asyncio.Event,
        on_step: StepHook | None,
        checks: bool | CheckReport = False,
    ) -> None:
        super().__init__(session_factory, prepared.operation_id, on_step)
        self.checks = checks
        self.checked: CheckReport | None = None
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
        self.notes: list[str] = []  # what went another way than planned but was dealt with
        self.backup: backups.Backup | None = None
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

    # -------------------------------------------------------------- the preflight checks

    def start_checks(self) -> tuple[asyncio.Future[CheckReport], list[Finding], float] | None:
        """Start the preflight checks beside the first steps (a shutdown for power, or on a schedule)."""
        if isinstance(self.checks, CheckReport):
            self.checked = self.checks
            return None
        if not self.checks or not self.prepared.plan.whole_cluster:
            return None
        targets = [
            CheckTarget(self.prepared.nodes[h], self.prepared.power[h]) for h in self.prepared.plan.hostnames
        ]
        found: list[Finding] = []

        async def collect(finding: Finding) -> None:
            found.append(finding)

        task = asyncio.ensure_future(check_nodes(targets, self.settings, collect))
        return task, found, asyncio.get_running_loop().time()

    async def record_checks(
        self, checks: tuple[asyncio.Future[CheckReport], list[Finding], float] | None
    ) -> None:
        """Record the preflight's findings as a step; wait for them at most ``preflight_shutdown_wait``
        seconds from their start: the shutdown never stops because of them (the battery is running out)."""
        if checks is None:
            if self.checked is not None:
                await self._record_report(self.checked, utcnow(), " (checked before the shutdown started)")
            return
        task, found, begun = checks
        started = utcnow()
        wait = self.settings.preflight_shutdown_wait
        left = max(0.0, begun + wait - asyncio.get_running_loop().time())
        try:
            report = await asyncio.wait_for(asyncio.shield(task), left)
        except TimeoutError:
            task.cancel()
            partial = CheckReport(list(found))
            message = (
                f"not finished within {wait:g} s (MKO_PREFLIGHT_SHUTDOWN_WAIT): the shutdown went on;"
                f" found so far: {partial.summary()}"
            )
            detail = {"findings": [f.as_dict() for f in found], "finished": False}
            await self.record("preflight", None, OperationStatus.CANCELLED, message, detail, started)
            return
        except Exception as exc:  # the checks are advice: an error in them never stops the shutdown
            log.exception("shutdown: preflight checks failed")
            await self.record(
                "preflight", None, OperationStatus.FAILED, f"checks crashed: {exc}", {}, started
            )
            return
        self.checked = report
        await self._record_report(report, started, "")

    async def _record_report(self, report: CheckReport, started: Any, note: str) -> None:
        message = report.summary() + note
        if report.status == OperationStatus.FAILED:
            message += "; the shutdown goes on (see `mko cluster check` for the fixes)"
        detail = {"findings": [f.as_dict() for f in report.findings], "counts": report.counts()}
        await self.record("preflight", None, report.status, message, detail, started)

    # -------------------------------------------------------------- steps

    async def _ssh(
        self, host: str, commands: Sequence[Sequence[str]], timeout: float, *, snap_change: bool = False
    ) -> _Outcome:
        """Run commands on HOST in one connection; the later ones only when the one before asks for it.

        ``snap_change``: the commands change the MicroK8s snap's services, and snapd runs one change per
        snap at a time; one it refuses because another still runs is sent again until that one has
        ended, within ``timeout`` for the whole step (:func:`mko.cluster.microk8s.run_once_snapd_is_free`).
        """
        target = SshTarget.of(self.prepared.nodes[host], self.settings)
        begun = time.monotonic()
        connected = False
        refused: list[float] = []

        async def run(connection: SshSession, argv: Sequence[str]) -> CommandResult:
            if not snap_change:
                return await connection.run(argv, sudo=True, timeout=timeout)
            # Power flapping: a recovery's `microk8s start` sent by an mko that lost power again goes
            # on, and snapd refuses the stop meanwhile; once the start has ended the stop goes through,
            # so the node is not powered off with its services enabled for its next boot.
            return await run_once_snapd_is_free(
                connection,
                argv,
                timeout=timeout,
                deadline=begun + timeout,
                pause=min(self.settings.probe_interval, 0.5),
                refused=refused,
            )

        try:
            async with connect(target, self.settings) as connection:
                connected = True
                result = await run(connection, commands[0])
                detail = result.as_dict()
                for fallback in commands[1:]:
                    if not _wants_fallback(result):
                        break
                    notice = _last_line(result)
                    result = await run(connection, fallback)
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
        if refused:
            waited = round(time.monotonic() - refused[0], 1)
            detail |= {"refused_while_busy": len(refused), "waited_for_other_change": waited}
            message += (
                f" (refused {len(refused)} time(s) over {waited:g} s: another change of the microk8s snap"
                " was running on the node, e.g. a `microk8s start`)"
            )
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
            await self._drain(step, started)
            return True  # power is running out: a failed drain does not stop the shutdown
        if step.action == "stop":
            outcome = await self._ssh(
                step.hostname,
                [["microk8s", "stop"], ["snap", "stop", "microk8s", "--disable"]],
                settings.microk8s_stop_timeout,
                snap_change=True,
            )
            if outcome.status != OperationStatus.SUCCEEDED:
                self.failures.append(f"stop {step.hostname}: {outcome.message}")
            await self.record_step(step, outcome, started)
            return not outcome.fatal
        return await self._power_off(step, started)

    # -------------------------------------------------------------- drains past a PodDisruptionBudget

    async def _drain(self, step: PlannedStep, started: Any) -> None:
        """Drain; when a PodDisruptionBudget blocks it past the grace, name the budget and the pods, and
        (a whole-cluster power-off, ``eviction_fallback``) delete them with ``--disable-eviction``."""
        name = kube_name(self.prepared.nodes[step.hostname])
        options = self.prepared.plan.options
        grace = options.drain_grace or self.settings.drain_timeout
        outcome = await self._ssh(step.runs_on, [drain_argv(name, grace)], grace + 15)
        if outcome.result is not None and f"node/{name} cordoned" in outcome.result.stdout.splitlines():
            # Only a cordon of ours is undone by the recovery ("already cordoned" was someone else's).
            await self._mark_cordoned(step.node_id)
        blocked = parse_drain(outcome.result.stderr).by_budget if outcome.result is not None else []
        if outcome.status == OperationStatus.SUCCEEDED or not blocked:
            if outcome.status != OperationStatus.SUCCEEDED:
                self.failures.append(f"drain {step.hostname}: {outcome.message}")
            await self.record_step(step, outcome, started)
            return
        budgets = await self._budgets(step.runs_on, blocked)
        named = "; ".join(b.describe() for b in budgets) or (
            f"none matches {', '.join(blocked)} any more (or the budgets could not be read)"
        )
        outcome.message = f"eviction refused for {grace:g} s by a PodDisruptionBudget: {named}"
        outcome.detail |= {"blocked_pods": blocked, "budgets": [b.__dict__ for b in budgets]}
        await self.record_step(step, outcome, started)
        await self._fallback(step, name, blocked, budgets)

    async def _fallback(
        self, step: PlannedStep, name: str, blocked: list[str], budgets: list[BlockingBudget]
    ) -> None:
        """Delete the protected pods (``kubectl drain --disable-eviction``), or record why not."""
        started = utcnow()
        label = f"fallback {step.hostname}"
        pods = ", ".join(blocked)
        if not self.prepared.plan.whole_cluster:
            why = (
                "not taken: a single node's maintenance never bypasses a PodDisruptionBudget;"
                f" {step.hostname} stays cordoned with {pods} on it (raise the budget's workload replicas,"
                " or move them)"
            )
            self.failures.append(f"drain {step.hostname}: blocked by a PodDisruptionBudget ({pods})")
            await self.record(label, step.node_id, OperationStatus.CANCELLED, why, {}, started)
            return
        if not self.prepared.plan.options.eviction_fallback:
            why = f"not taken: eviction_fallback is off for this cluster; {pods} go down with the node"
            self.failures.append(f"drain {step.hostname}: blocked by a PodDisruptionBudget ({pods})")
            await self.record(label, step.node_id, OperationStatus.CANCELLED, why, {}, started)
            return
        timeout = self.settings.drain_timeout
        argv = drain_argv(name, timeout, disable_eviction=True)
        outcome = await self._ssh(step.runs_on, [argv], timeout + 15)
        owners = ", ".join(f"{b.namespace}/{b.name}" for b in budgets) or "a PodDisruptionBudget"
        if outcome.status == OperationStatus.SUCCEEDED:
            outcome.message = (
                f"whole-cluster power-off: deleted {pods} without eviction"
                f" (kubectl drain --disable-eviction), bypassing {owners}; {_last_line_of(outcome)}"
            )
            self.notes.append(f"{step.hostname}: {pods} deleted past {owners}")
        else:
            self.failures.append(f"drain {step.hostname} --disable-eviction: {outcome.message}")
        outcome.detail |= {"bypassed": [f"{b.namespace}/{b.name}" for b in budgets], "pods": blocked}
        await self.record(label, step.node_id, outcome.status, outcome.message, outcome.detail, started)

    async def _budgets(self, host: str, pods: list[str]) -> list[BlockingBudget]:
        """The PodDisruptionBudgets protecting PODS (``ns/name``), read through HOST; [] when unreadable."""
        try:
            async with connect(SshTarget.of(self.prepared.nodes[host], self.settings), self.settings) as ssh:
                found = []
                for pod in pods[:_MAX_PODS_LOOKED_UP]:
                    namespace, _, pod_name = pod.partition("/")
                    text = await kubectl_json(ssh, ["get", "pod", "-n", namespace, pod_name])
                    if text is not None:
                        found.append(text)
                pdbs = await kubectl_json(ssh, ["get", "pdb", "-A"])
        except PowerError as exc:
            log.warning("shutdown: PodDisruptionBudgets not read through %s: %s", host, exc)
            return []
        if pdbs is None:
            return []
        try:
            return blocking_budgets(found, pdbs)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("shutdown: PodDisruptionBudgets not understood: %s", exc)
            return []

    # -------------------------------------------------------------- backup and storage quiesce

    async def prepare(self) -> bool:
        """Through the drain host, before anything stops: back up the datastore, quiesce storage.

        False when the backup failed and the cluster requires one: nothing has been stopped then.
        """
        plan = self.prepared.plan
        host = plan.drain_host
        if host is None or host in self.refused:
            return True
        started = utcnow()
        node = self.prepared.nodes[host]
        try:
            async with connect(SshTarget.of(node, self.settings), self.settings) as ssh:
                if plan.options.backup and not await self._backup(ssh, node):
                    return False
                if plan.options.quiesce and not self.abort.is_set():
                    await self._quiesce(ssh)
                    await self._wait_detached(ssh)
        except PowerError as exc:
            message = f"the drain host {host} did not answer: {exc}"
            await self.record("prepare", node.id, OperationStatus.FAILED, message, {}, started)
            if plan.options.backup and plan.options.backup_required and self.backup is None:
                self.stop_reason = f"no datastore backup ({message}) and this cluster requires one"
                return False
            self.failures.append(f"prepare: {message}")
        return True

    async def _backup(self, ssh: SshSession, node: Node) -> bool:
        started = utcnow()
        options = self.prepared.plan.options
        outcome = await backups.take_backup(
            ssh,
            self.settings,
            self.prepared.plan.cluster_id,
            node=node.hostname,
            operation_id=self.prepared.operation_id,
            timeout=options.backup_timeout,
            keep=options.backup_keep,
        )
        detail = dict(outcome.detail or {}) | {"state": outcome.state}
        if outcome.backup is not None:
            self.backup = outcome.backup
            detail["backup"] = outcome.backup.model_dump()
            await self.record(
                f"backup {node.hostname}",
                node.id,
                OperationStatus.SUCCEEDED,
                outcome.message,
                detail,
                started,
            )
            return True
        if options.backup_required:
            self.stop_reason = (
                f"the datastore backup failed ({outcome.message}) and this cluster requires one"
            )
            message = f"{outcome.message}; backup_required is set: the shutdown stops, nothing was stopped"
        else:
            message = f"{outcome.message}; the shutdown goes on without a backup (backup_required is off)"
            self.failures.append(f"backup: {outcome.message}")
        await self.record(
            f"backup {node.hostname}", node.id, OperationStatus.FAILED, message, detail, started
        )
        return not options.backup_required

    async def _quiesce(self, ssh: SshSession) -> None:
        """Scale the workloads that mount PersistentVolumes to zero, storing their replicas first."""
        started = utcnow()
        options = self.prepared.plan.options
        selector = ["-l", ",".join(options.quiesce_labels)] if options.quiesce_labels else []
        claims = await kubectl_json(ssh, ["get", "pvc", "-A"])
        listed = await kubectl_json(ssh, ["get", "deploy,sts", "-A", *selector])
        if claims is None or listed is None:
            message = "workloads not listed: the API did not answer (see the operation's log)"
            self.failures.append(f"quiesce: {message}")
            await self.record("quiesce", None, OperationStatus.FAILED, message, {}, started)
            return
        workloads = quiesce.pv_workloads(listed, claims, options)
        scaled, failed, kept = [], [], []
        for workload in workloads:
            with self.session_factory() as session:
                fresh = quiesce.record_scaled(
                    session, self.prepared.plan.cluster_id, workload, self.prepared.operation_id
                )
            if workload.replicas == 0:
                if not fresh:
                    kept.append(workload.ref)  # an earlier shutdown scaled it: its count is kept
                continue
            argv = quiesce.scale_argv(workload.kind, workload.namespace, workload.name, 0)
            try:
                result = await ssh.run(argv, sudo=True, timeout=60)
            except PowerError as exc:
                failed.append(f"{workload.ref}: {exc}")
                continue
            if result.ok:
                scaled.append(f"{workload.ref} ({workload.replicas})")
            else:
                failed.append(f"{workload.ref}: {_last_line(result)}")
        message = f"scaled {len(scaled)} workload(s) mounting PersistentVolumes to zero"
        message += f": {', '.join(scaled)}" if scaled else ""
        if not workloads:
            message = "no Deployment or StatefulSet mounts a PersistentVolume: nothing to scale"
        if kept:
            message += f"; still at zero from an earlier shutdown: {', '.join(kept)}"
        if failed:
            message += f"; not scaled: {'; '.join(failed)}"
            self.failures.append(f"quiesce: {'; '.join(failed)}")
        status = OperationStatus.FAILED if failed else OperationStatus.SUCCEEDED
        detail = {"scaled": scaled, "failed": failed, "kept": kept, "workloads": [w.ref for w in workloads]}
        await self.record("quiesce", None, status, message, detail, started)

    async def _wait_detached(self, ssh: SshSession) -> None:
        """When Longhorn is installed, wait until its volumes are detached; report those that stay."""
        argv = ["microk8s", "kubectl", "get", "crd", "volumes.longhorn.io"]
        if not (await ssh.run(argv, sudo=True, timeout=30)).ok:
            return  # not installed (NotFound): nothing to wait for
        started = utcnow()
        loop = asyncio.get_running_loop()
        begun = loop.time()
        deadline = begun + self.prepared.plan.options.detach_timeout
        attached: list[str] = []
        while True:
            text = await kubectl_json(ssh, ["get", "volumes.longhorn.io", "-n", "longhorn-system"])
            attached = quiesce.attached_volumes(text) if text is not None else ["(volumes not listed)"]
            if not attached or loop.time() >= deadline or self.abort.is_set():
                break
            await asyncio.sleep(min(self.settings.probe_interval, 1.0))
        waited = loop.time() - begun
        if attached:
            message = f"still attached after {waited:.1f} s: {'; '.join(attached)}"
            self.failures.append(f"longhorn: {message}")
            status = OperationStatus.FAILED
        else:
            message = f"every Longhorn volume detached after {waited:.1f} s"
            status = OperationStatus.SUCCEEDED
        await self.record("longhorn volumes", None, status, message, {"attached": attached}, started)

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
            if step.cut_by and outcome.status == OperationStatus.SUCCEEDED:
                outcome = await self._cut_power(step, outcome)
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
        [result] = await power_off([node], schedule, DRIVERS.lookup(self.settings), soft=True)
        detail = result.as_dict()
        if result.state == OutcomeState.OFF:
            after = result.off_after or 0.0
            message = f"powered off: the {node.method} driver reports it off after {after:.1f} s"
            detail |= {"confirmed": True, "confirmed_by": f"{node.method} power query"}
            return _Outcome(OperationStatus.SUCCEEDED, message, detail)
        if result.state == OutcomeState.NOT_OFF:
            waited = f"{self.settings.poweroff_timeout:g} s"
            message = f"unconfirmed: the {node.method} driver still does not report it off after {waited}"
            return _Outcome(OperationStatus.FAILED, message, detail | {"confirmed": False})
        return _Outcome(OperationStatus.FAILED, result.describe(), detail)

    async def _cut_power(self, step: PlannedStep, halted: _Outcome) -> _Outcome:
        """After the OS halted: switch the node's power off through its driver (an outlet or a relay can
        only cut power), confirmed by the driver's query. Left on, the outlet's next "on" would change
        nothing and the wake could not bring the machine back."""
        schedule = WakeSchedule(retries=2, delay=1.0, wait=True, timeout=self.settings.poweroff_timeout)
        node = self.prepared.power[step.hostname]
        [result] = await power_off([node], schedule, DRIVERS.lookup(self.settings))
        halted.detail["power_cut"] = result.as_dict()
        if result.state == OutcomeState.OFF:
            halted.message += f"; power cut by the {node.method} driver, which reports it off"
            return halted
        halted.status = OperationStatus.FAILED
        halted.message += (
            f"; but the {node.method} driver could not cut its power ({result.describe()}):"
            " its next power-on will not start it"
        )
        return halted

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
        checks = self.start_checks()
        try:
            await self.preflight()
            if plan.prepares and not await self.prepare():
                # Backup required and none taken: stop here, before anything was stopped.
                self.skipped = [f"{s.action} {s.hostname}" for c in (*plan.parallel, *plan.serial) for s in c]
                await self.record("stop early", None, OperationStatus.FAILED, self.reason(), {})
                return self.close()
            await self.record_checks(checks)
            await asyncio.gather(*(self.chain(c) for c in plan.parallel))
            for chain in plan.serial:
                await self.chain(chain)
            if plan.ups_id is not None and not self.skipped and not self.abort.is_set():
                await self.end_for_ups(plan.ups_id)
        except Exception as exc:  # a bug must not leave the operation running forever
            if checks is not None:
                checks[0].cancel()
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
            nodes = [n for c in sorted(clusters) for n in list_nodes(session, c)]
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
        if not self.prepared.plan.whole_cluster:
            host = self.prepared.plan.hostnames[0]
            summary = f"{host} drained" if not self.failures else f"{host} not drained"
        if self.skipped:
            status = OperationStatus.CANCELLED
            summary += f"; stopped at a safe point: {self.reason()}"
        elif not self.prepared.plan.whole_cluster:
            status = OperationStatus.FAILED if self.failures else OperationStatus.SUCCEEDED
        elif len(self.powered_off) == total and not self.failures:
            status = OperationStatus.SUCCEEDED
        elif self.powered_off:
            status = OperationStatus.PARTIAL
        else:
            status = OperationStatus.FAILED
        if self.failures:
            summary += "; " + "; ".join(self.failures)
        if self.notes:
            summary += "; " + "; ".join(self.notes)
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
                "notes": self.notes,
                "backup": self.backup.model_dump() if self.backup is not None else None,
            }
            if self.checked is not None:
                result["preflight"] = {"summary": self.checked.summary(), "counts": self.checked.counts()}
            if self.prepared.outage_id is not None:
                result["outage_id"] = self.prepared.outage_id
                outage = outages.get_outage(session, self.prepared.outage_id)
                # Stopped early (mains back, or mko stopping): still shutting down, for the restore
                # or the next start to take on; otherwise the cluster is down for power.
                if not self.skipped and outage.phase == OutagePhase.SHUTTING_DOWN:
                    outages.set_phase(session, outage, OutagePhase.DOWN, f"down for power: {summary}")
            return finish_operation(session, operation, status=status, summary=summary, result=result)


async def run_shutdown(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedShutdown,
    *,
    abort: asyncio.Event | None = None,
    on_step: StepHook | None = None,
    checks: bool | CheckReport = False,
) -> Operation:
    """Carry out a shutdown plan; ``abort`` (its ``reason`` attribute, if any, says why) stops it safely.

    ``checks``: run the preflight checks beside the first steps and record their findings (True), or
    record those of a preflight already run (a CheckReport).
    """
    stop = abort or asyncio.Event()
    runner = _Run(session_factory, settings, prepared, stop, on_step, checks)

    def cancelled() -> None:
        if not stop.is_set():
            runner.stop_reason = "mko stopped while it ran"
            stop.set()

    return await _finish_even_if_cancelled(asyncio.ensure_future(runner.run()), cancelled)
