"""The verified recovery: wake the nodes, start MicroK8s, wait until every node is
Ready, uncordon."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from mko.cluster import backups, quiesce
from mko.cluster.diagnosis import ControlPlaneView, diagnose, parse_status
from mko.cluster.microk8s import kube_name, run_once_snapd_is_free, shlex_name
from mko.cluster.plan import _check_idle
from mko.cluster.steps import _last_line, _StepLog, _wants_fallback
from mko.inventory.clusters import empty_cluster, get_cluster
from mko.inventory.nodes import list_nodes
from mko.operations.kinds import READY_STEP_PREFIX, RECOVER_KIND
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.inventory import Node, NodeRole
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.outages import ScaledWorkload
from mko.platform.errors import FatalPowerError, PowerError
from mko.platform.settings import Settings
from mko.ssh.client import SshSession, SshTarget, connect
from mko.ups import outages
from mko.wol.reachability import Reachability, record_reachability

if TYPE_CHECKING:
    from mko.cluster.steps import StepHook

__all__ = ["PreparedRecovery", "ready_nodes", "run_recovery", "start_recovery"]

log = logging.getLogger("mko.shutdown")


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
    get_cluster(session, cluster_id)
    nodes = list_nodes(session, cluster_id)
    if node_ids is not None:
        nodes = [n for n in nodes if n.id in set(node_ids)]
    if not nodes:
        raise empty_cluster(cluster_id)
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
        self.api_errors: dict[str, str | None] = {}  # control plane -> kubectl's last error (None: answered)
        self.diagnosis: dict[str, Any] | None = None
        self.restored: list[str] = []
        self.waiting_text = ""

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
                    await self.note_up(node)
                    left = self.deadline - self.loop.time()
                    limit = min(max(1.0, left), self.settings.microk8s_start_timeout)
                    # A `microk8s stop` still running there (sent by an mko that lost power mid-shutdown)
                    # makes snapd refuse the start; it goes in once that stop has ended.
                    start = functools.partial(
                        run_once_snapd_is_free,
                        connection,
                        timeout=limit,
                        deadline=time.monotonic() + left,
                        pause=min(self.settings.probe_interval, 0.5),
                    )
                    result = await start(["microk8s", "start"])
                    detail = result.as_dict()
                    if _wants_fallback(result):
                        notice = _last_line(result)
                        result = await start(["snap", "start", "microk8s", "--enable"])
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

    async def note_up(self, node: Node) -> None:
        """Store that the node answers (its SSH did), as the background probes would: the dashboard's
        state then knows it came up before Kubernetes called it Ready."""
        answered = {node.id: Reachability(up=True, port=node.ssh_port)}
        async with self.lock:
            with self.session_factory() as session:
                record_reachability(session, answered, utcnow())

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
                except (PowerError, ValueError) as exc:
                    self.api_errors[control.hostname] = str(exc)
                    continue
                self.api_errors[control.hostname] = None if result.ok else _last_line(result)
                if result.ok:
                    answered = control
                    break
            await self.note_readiness(seen, answered)
            if names and all(seen.get(name, {}).get("ready") for name in names):
                return answered, seen
            if self.loop.time() >= self.deadline:
                await self.note_not_ready(seen)
                return answered, seen
            await asyncio.sleep(min(self.settings.probe_interval, 0.5))

    async def note_readiness(self, seen: dict[str, dict[str, bool]], control: Node | None) -> None:
        """A ``Ready <host>`` step for each node that became Ready since the last look, and the
        operation's summary saying who is still awaited (what the CLI and the operation page show)."""
        for node in self.prepared.nodes:
            report = self.report[node.hostname]
            if report.ready or not seen.get(kube_name(node), {}).get("ready"):
                continue
            report.ready = True
            after = self.loop.time() - self.begin
            via = f" (kubectl on {control.hostname})" if control is not None else ""
            await self.record(
                f"{READY_STEP_PREFIX}{node.hostname}",
                node.id,
                OperationStatus.SUCCEEDED,
                f"after {after:.1f}s{via}",
                {"kube_name": kube_name(node), "ready": True},
            )
        waiting = [self._readiness_word(node, seen) for node in self.prepared.nodes]
        awaited = [word for word in waiting if word]
        total = len(self.prepared.nodes)
        text = f"waiting for Ready: {total - len(awaited)}/{total} Ready"
        if awaited:
            text += "; " + ", ".join(awaited)
        if text != self.waiting_text:
            self.waiting_text = text
            await self.note_summary(text)
            self.on_step("cluster", text, OperationStatus.RUNNING)

    async def note_not_ready(self, seen: dict[str, dict[str, bool]]) -> None:
        """A failed ``Ready <host>`` step for each node the timeout left not Ready, saying how it was."""
        for node in self.prepared.nodes:
            word = self._readiness_word(node, seen)
            if word:
                after = self.loop.time() - self.begin
                name = f"{READY_STEP_PREFIX}{node.hostname}"
                detail = {"kube_name": kube_name(node), "ready": False}
                state = word.split(": ", 1)[1]
                message = f"not Ready after {after:.1f}s: {state}"
                await self.record(name, node.id, OperationStatus.FAILED, message, detail)

    def _readiness_word(self, node: Node, seen: dict[str, dict[str, bool]]) -> str:
        """ "" for a Ready node; else "host: NotReady" or why it is not even asked about."""
        report = self.report[node.hostname]
        if report.ready:
            return ""
        if kube_name(node) in seen:
            return f"{node.hostname}: NotReady"
        if report.started:
            return f"{node.hostname}: not registered with Kubernetes"
        return f"{node.hostname}: {'MicroK8s did not start' if report.error else 'waiting for SSH'}"

    async def note_summary(self, text: str) -> None:
        async with self.lock:
            with self.session_factory() as session:
                operation = session.get_one(Operation, self.prepared.operation_id)
                operation.summary = text
                session.commit()

    async def uncordon(self, control: Node) -> None:
        """Uncordon the nodes this orchestrator cordoned (and only those), through CONTROL."""
        with self.session_factory() as session:
            ours = [n.id for n in list_nodes(session, self.prepared.cluster_id) if n.cordoned_by_mko]
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
        if not_ready:
            await self.diagnose(not_ready)
        elif control is not None:
            await self.check_datastore(control)
        if control is not None:
            await self.uncordon(control)
            if not not_ready:
                await self.restore_workloads(control)
        return self.close()

    # -------------------------------------------------------------- datastore and diagnosis

    async def check_datastore(self, control: Node) -> None:
        """``microk8s status`` on the control plane that answered: running, HA, the dqlite voters."""
        started = utcnow()
        try:
            async with connect(SshTarget.of(control, self.settings), self.settings) as connection:
                result = await connection.run(["microk8s", "status"], sudo=True, timeout=60)
        except PowerError as exc:
            self.problems.append(f"datastore: {exc}")
            await self.record("datastore", control.id, OperationStatus.FAILED, str(exc), {}, started)
            return
        status = parse_status(result.stdout)
        detail = result.as_dict() | {"status": status}
        if not status["running"]:
            message = f"{control.hostname}: {status['first_line'] or _last_line(result)}"
            self.problems.append(f"datastore: {message}")
            await self.record("datastore", control.id, OperationStatus.FAILED, message, detail, started)
            return
        voters = status.get("voters", [])
        ha = "yes" if status.get("high_availability") else "no"
        message = (
            f"microk8s is running on {control.hostname}; high-availability: {ha};"
            f" {len(voters)} datastore voter(s): {' '.join(voters) or 'none'}"
        )
        await self.record("datastore", control.id, OperationStatus.SUCCEEDED, message, detail, started)

    async def diagnose(self, not_ready: list[str]) -> None:
        """Say why nodes are not Ready: lost dqlite quorum, a kubelite crash loop, or nodes NotReady."""
        started = utcnow()
        controls = sorted(
            (n for n in self.prepared.nodes if n.role == NodeRole.CONTROL_PLANE), key=lambda n: n.id
        )
        views = await asyncio.gather(*(self._view(n) for n in controls))
        backup = backups.latest_backup(self.settings, self.prepared.cluster_id)
        found = diagnose(
            list(views),
            [n.hostname for n in controls[:3]],  # MicroK8s makes the first three control planes voters
            not_ready,
            backup.model_dump() if backup is not None else None,
            self.prepared.cluster_id,
        )
        self.diagnosis = {"kind": found.kind, "message": found.message}
        self.problems.append(f"diagnosis: {found.message}")
        detail = found.detail | {"kind": found.kind}
        await self.record("diagnosis", None, OperationStatus.FAILED, found.message, detail, started)

    async def _view(self, node: Node) -> ControlPlaneView:
        view = ControlPlaneView(
            node.hostname, self.report[node.hostname].started, self.api_errors.get(node.hostname, "no answer")
        )
        if not view.started:
            return view
        unit = "snap.microk8s.daemon-kubelite.service"
        try:
            async with connect(SshTarget.of(node, self.settings), self.settings) as connection:
                status = await connection.run(["microk8s", "status"], sudo=True, timeout=60)
                view.status = parse_status(status.stdout)["first_line"]
                show = await connection.run(
                    ["systemctl", "show", unit, "-p", "NRestarts,ActiveState,SubState,Result"],
                    sudo=True,
                    timeout=30,
                )
                if show.ok:
                    view.kubelite = dict(
                        line.split("=", 1) for line in show.stdout.splitlines() if "=" in line
                    )
        except PowerError as exc:
            view.status = view.status or str(exc)
        return view

    # -------------------------------------------------------------- storage given back

    async def restore_workloads(self, control: Node) -> None:
        """Give the workloads a shutdown scaled to zero their replicas back (``--current-replicas=0``)."""
        with self.session_factory() as session:
            rows = [
                (r.id, r.namespace, r.kind, r.name, r.replicas)
                for r in quiesce.pending_restores(session, self.prepared.cluster_id)
            ]
        if not rows:
            return
        started = utcnow()
        done: list[str] = []
        left: list[str] = []
        failed: list[str] = []
        try:
            async with connect(SshTarget.of(control, self.settings), self.settings) as connection:
                for row_id, namespace, kind, name, replicas in rows:
                    ref = f"{namespace}/{kind}/{name}"
                    outcome = await _scale_back(connection, kind, namespace, name, replicas)
                    if outcome == "failed":
                        failed.append(ref)
                        continue
                    (done if outcome == "scaled" else left).append(f"{ref} ({replicas})")
                    await self._forget_scaled(row_id)
        except PowerError as exc:
            failed.append(str(exc))
        self.restored = done
        message = f"restored {len(done)} workload(s): {', '.join(done) or 'none'}"
        if left:
            message += f"; changed by someone meanwhile, left as they are: {', '.join(left)}"
        if failed:
            message += f"; not restored (kept for the next recovery): {', '.join(failed)}"
            self.problems.append(f"restore workloads: {', '.join(failed)}")
        status = OperationStatus.FAILED if failed else OperationStatus.SUCCEEDED
        detail = {"restored": done, "left": left, "failed": failed}
        await self.record("restore workloads", None, status, message, detail, started)

    async def _forget_scaled(self, row_id: int) -> None:
        async with self.lock:
            with self.session_factory() as session:
                row = session.get(ScaledWorkload, row_id)
                if row is not None:
                    session.delete(row)
                    session.commit()

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
            "restored": self.restored,
            "diagnosis": self.diagnosis,
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


async def _scale_back(connection: SshSession, kind: str, namespace: str, name: str, replicas: int) -> str:
    """``scaled``; ``changed`` (not at zero any more: someone scaled it); ``failed`` (try again later)."""
    argv = quiesce.scale_argv(kind, namespace, name, replicas, current=0)
    try:
        result = await connection.run(argv, sudo=True, timeout=60)
    except PowerError:
        return "failed"
    if result.ok:
        return "scaled"
    if "Expected replicas to be" in result.stderr or "not found" in result.stderr:
        return "changed"
    return "failed"


def _started(report: _NodeReport) -> bool:
    return report.started


def _ready(report: _NodeReport) -> bool:
    return report.ready


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
