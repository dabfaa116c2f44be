"""The shutdown plan: which node goes when and how (drain workers, stop MicroK8s,
power off, control plane last), shown before anything runs."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.cluster.options import K8sOptions, get_options
from mko.inventory.clusters import empty_cluster, get_cluster
from mko.inventory.dependencies import depths, implicit_edges
from mko.inventory.nodes import get_node, list_nodes
from mko.operations import ownership
from mko.operations.kinds import RECOVER_KIND, SHUTDOWN_KINDS
from mko.platform.db.models.inventory import Cluster, Node, NodeRole
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import UPS
from mko.platform.errors import ConflictError, InputError
from mko.platform.missing import does_not_exist
from mko.platform.settings import Settings
from mko.power.probe import probe_tcp
from mko.power.registry import DRIVERS
from mko.ups import outages

__all__ = [
    "PlanInputs",
    "PlannedStep",
    "ShutdownPlan",
    "build_plan",
    "last_duration",
    "node_drain_inputs",
    "plan_for",
    "plan_inputs",
    "plan_node_drain",
    "plan_shutdown",
]


SHUTDOWN_ACTIONS = (ClusterAction.GRACEFUL_SHUTDOWN, ClusterAction.FORCE_SHUTDOWN)


@dataclass(frozen=True)
class PlannedStep:
    """One action on one node, and where its command runs."""

    node_id: int
    hostname: str
    action: str  # drain | stop | poweroff
    runs_on: str  # hostname whose SSH runs the command, or "driver:<name>"
    # poweroff over SSH: the method whose driver then switches the node's power off (an outlet, a plug's
    # relay, a webhook), so that the wake's "on" powers it up again.
    cut_by: str | None = None

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
            if self.cut_by:
                where += f", then power cut by the {self.cut_by} driver"
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
    # Workers other nodes depend on (depends_on): in `serial`, after their dependents.
    providers: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    # A shutdown for a UPS (an outage): its id, the nodes that answered when planned, and how it ends.
    ups_id: int | None = None
    nodes_up: list[int] = field(default_factory=list)
    finales: list[UpsFinale] = field(default_factory=list)
    options: K8sOptions = field(default_factory=K8sOptions)
    # False: one node's maintenance (a drain only); a PodDisruptionBudget is never bypassed then.
    whole_cluster: bool = True

    @property
    def prepares(self) -> bool:
        """Whether the drain host backs up the datastore and quiesces storage before anything stops."""
        return (
            not self.force and self.drain_host is not None and (self.options.backup or self.options.quiesce)
        )

    def _preparation(self, number: int) -> list[str]:
        options = self.options
        out = [f"{number}. first, through the drain host {self.drain_host}:"]
        if options.backup:
            then = "stops the shutdown" if options.backup_required else "is reported, the shutdown goes on"
            out.append(
                f"   datastore backup  microk8s dbctl backup on {self.drain_host}, kept on mko's host"
                f" (last {options.backup_keep}; a failed backup {then})"
            )
        if options.quiesce:
            which = "Deployments and StatefulSets mounting PersistentVolumes"
            if options.quiesce_storage_classes:
                which += f" of StorageClass {', '.join(options.quiesce_storage_classes)}"
            if options.quiesce_labels:
                which += f" labelled {', '.join(options.quiesce_labels)}"
            out.append(f"   storage quiesce   scale to zero the {which} (replicas stored for the recovery)")
            out.append(
                f"   longhorn          wait up to {options.detach_timeout:g} s for Longhorn volumes to"
                " detach (when Longhorn is installed)"
            )
        return out

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
        if not self.whole_cluster:
            mode = "maintenance drain (a PodDisruptionBudget is never bypassed)"
        out = [
            f"{mode} of cluster {self.cluster_id} ({self.cluster_name}); drain host: {self.drain_host or '—'}"
        ]
        out += [f"note: {note}" for note in self.notes]
        number = 1
        if self.prepares:
            out += self._preparation(number)
            number += 1
        if self.parallel:
            out.append(f"{number}. workers, in parallel:" if self.whole_cluster else f"{number}. the node:")
            number += 1
            for chain in self.parallel:
                out.extend(f"   {step.describe()}" for step in chain)
        for chain in self.serial:
            last = chain is self.serial[-1] and chain[0].hostname == self.drain_host
            role = "the drain host, last of all" if last else "control plane, alone"
            if chain[0].hostname in self.providers:
                role = "a worker other nodes depend on, alone"
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
            "options": self.options.model_dump(),
            "lines": self.lines(),
        }


def _power_off_step(node: Node) -> PlannedStep:
    """Soft-off by the node's power driver where it can; else ``systemctl poweroff`` over SSH, and then,
    where the driver can only cut power (an outlet, a relay), the power cut once the OS has halted."""
    cls = DRIVERS.get(node.wol_method)
    if cls is not None and cls.supports("soft"):
        return PlannedStep(node.id, node.hostname, "poweroff", f"driver:{node.wol_method}")
    cut_by = node.wol_method if cls is not None and cls.supports("off") else None
    return PlannedStep(node.id, node.hostname, "poweroff", node.hostname, cut_by)


async def _reachable_control_plane(nodes: Sequence[Node], timeout: float) -> Node | None:
    """The first control plane (by id) whose SSH port answers."""
    for node in sorted(nodes, key=lambda n: n.id):
        if (await probe_tcp(node.ip_address, node.ssh_port, timeout)).ok:
            return node
    return None


def build_plan(
    cluster_id: int, cluster_name: str, nodes: Sequence[Node], drain_host: Node | None, *, force: bool
) -> ShutdownPlan:
    """Order the steps: workers in parallel, then the workers others depend on (depends_on) one by one,
    the most depended-on last, then control planes one by one, the drain host last: a wake's order,
    reversed."""
    controls = sorted((n for n in nodes if n.role == NodeRole.CONTROL_PLANE), key=lambda n: n.id)
    workers = sorted((n for n in nodes if n.role != NodeRole.CONTROL_PLANE), key=lambda n: n.id)
    edges = {n.id: {d.depends_on_id for d in n.dependencies} for n in nodes}
    implied = implicit_edges((n.id, n.wol_method, n.proxmox_host_id, n.power_params) for n in nodes)
    for node_id, hosts in implied.items():  # a VM goes down before its Proxmox host
        edges[node_id] |= hosts
    needed = {d for n in workers for d in edges[n.id]} & {n.id for n in workers}
    level = depths((n.id for n in workers), edges)
    providers = sorted((n for n in workers if n.id in needed), key=lambda n: (-level[n.id], n.id))
    workers = [n for n in workers if n.id not in needed]
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
        steps.append(_power_off_step(node))
        return steps

    plan.parallel = [chain(n, drain=drains) for n in workers]
    plan.serial = [chain(n, drain=drains) for n in providers]
    plan.providers = {n.hostname for n in providers}
    plan.serial += [chain(n, drain=drains) for n in controls if drain_host is None or n.id != drain_host.id]
    if drain_host is not None and drain_host in nodes:
        # Nothing is left to drain it onto, and it runs every other drain: it goes last, undrained.
        plan.serial.append(chain(drain_host, drain=False))
    return plan


def node_drain_inputs(session: Session, settings: Settings, node_id: int) -> tuple[PlanInputs, Node]:
    """What one node's maintenance drain is planned from (ConflictError: the node is in no cluster)."""
    node = get_node(session, node_id)
    if node.cluster_id is None:
        raise ConflictError(
            f"node {node_id} belongs to no cluster: there is nothing to drain it from"
            f" (`mko node update {node_id} --cluster-id ID` puts it in one)"
        )
    return plan_inputs(session, settings, node.cluster_id), node


async def plan_node_drain(inputs: PlanInputs, node: Node, settings: Settings) -> ShutdownPlan:
    """One node's maintenance: drain it through another control plane that answers (itself when it is the
    only one); ConflictError when none answers. No database work (see :func:`plan_for`)."""
    controls = [n for n in inputs.nodes if n.role == NodeRole.CONTROL_PLANE]
    others = [n for n in controls if n.id != node.id]
    drain_host = await _reachable_control_plane(others, settings.probe_timeout) or (
        await _reachable_control_plane([n for n in controls if n.id == node.id], settings.probe_timeout)
    )
    if drain_host is None and not controls:
        raise ConflictError(
            f"cluster {inputs.cluster.id} has no control plane to drain through: mark one"
            " (`mko node update ID --role control-plane`)"
        )
    if drain_host is None:
        names = ", ".join(n.hostname for n in controls)
        raise ConflictError(
            f"no control plane of cluster {inputs.cluster.id} answers on SSH ({names}): nothing can drain;"
            f" wake them (`mko wol wake-cluster {inputs.cluster.id} --wait`) or check their SSH port"
            " (`mko node show ID`)"
        )
    plan = ShutdownPlan(
        inputs.cluster.id, inputs.cluster.name, False, drain_host.hostname, whole_cluster=False
    )
    plan.parallel = [[PlannedStep(node.id, node.hostname, "drain", drain_host.hostname)]]
    plan.options = inputs.options.model_copy(update={"backup": False, "quiesce": False})
    grace = plan.options.drain_grace or settings.drain_timeout
    plan.notes.append(f"evictions a PodDisruptionBudget refuses are retried for {grace:g} s, then given up")
    return plan


@dataclass
class PlanInputs:
    """What a shutdown plan is made of, read from the database (before any node is probed)."""

    cluster: Cluster
    nodes: list[Node]
    ups_id: int | None
    finales: list[UpsFinale]
    options: K8sOptions = field(default_factory=K8sOptions)
    # A shutdown of part of the cluster (the nodes a UPS left without mains): the nodes that stay up.
    staying: list[Node] = field(default_factory=list)


def plan_inputs(
    session: Session,
    settings: Settings,
    cluster_id: int,
    ups_id: int | None = None,
    node_ids: Sequence[int] | None = None,
) -> PlanInputs:
    """The cluster, its nodes and how a shutdown for ``ups_id`` ends (ConflictError: no nodes).

    ``node_ids``: only these nodes of the cluster go down (those a UPS left without mains); the others
    stay up, and one of their control planes drains them."""
    cluster = get_cluster(session, cluster_id)
    nodes = list_nodes(session, cluster_id)
    if not nodes:
        raise empty_cluster(cluster_id)
    if ups_id is not None and session.get(UPS, ups_id) is None:
        raise InputError("ups_id", does_not_exist("UPS", ups_id))
    finales = _finales(session, settings, cluster_id, ups_id)
    options = get_options(session, cluster_id)
    staying: list[Node] = []
    if node_ids is not None and set(node_ids) != {n.id for n in nodes}:
        staying = [n for n in nodes if n.id not in set(node_ids)]
        nodes = [n for n in nodes if n.id in set(node_ids)]
        # The cluster keeps running: its datastore and volumes stay in use, nothing to back up or quiesce.
        options = options.model_copy(update={"backup": False, "quiesce": False})
    return PlanInputs(cluster, nodes, ups_id, finales, options, staying)


async def plan_for(inputs: PlanInputs, settings: Settings, *, force: bool) -> ShutdownPlan:
    """Work out the order; the drain host is the first control plane whose SSH port answers.

    With ``inputs.ups_id`` the shutdown is for this UPS (an outage): every node is probed, so the
    outage knows which were up, and the plan ends with the UPS's power cycle and mko's own host where
    configured. Without it the plan shows how a shutdown for each UPS whose rules act on the cluster
    would end. No database work: an API route awaits this between worker-thread sessions.
    """
    nodes = inputs.nodes
    controls = [n for n in nodes if n.role == NodeRole.CONTROL_PLANE]
    # Part of the cluster: a control plane that stays up drains the nodes that go.
    staying = [n for n in inputs.staying if n.role == NodeRole.CONTROL_PLANE]
    drain_host = await _reachable_control_plane(staying, settings.probe_timeout) or (
        await _reachable_control_plane(controls, settings.probe_timeout)
    )
    plan = build_plan(inputs.cluster.id, inputs.cluster.name, nodes, drain_host, force=force)
    if inputs.staying:
        kept = ", ".join(n.hostname for n in inputs.staying)
        plan.notes.append(f"only the nodes that lost mains go down; staying up: {kept}")
    plan.ups_id = inputs.ups_id
    plan.finales = inputs.finales
    plan.options = inputs.options
    if not force and drain_host is not None:
        grace = inputs.options.drain_grace or settings.drain_timeout
        if inputs.options.eviction_fallback:
            plan.notes.append(
                f"a drain a PodDisruptionBudget still blocks after {grace:g} s deletes the pods it protects"
                " (kubectl drain --disable-eviction)"
            )
        else:
            plan.notes.append(
                f"a drain a PodDisruptionBudget still blocks after {grace:g} s is given up (eviction_fallback"
                " is off): its pods go down with the node"
            )
    if inputs.ups_id is not None:
        plan.nodes_up = sorted(await outages.answering(nodes, settings))
    return plan


async def plan_shutdown(
    session: Session,
    settings: Settings,
    cluster_id: int,
    *,
    force: bool,
    ups_id: int | None = None,
    node_ids: Sequence[int] | None = None,
) -> ShutdownPlan:
    """:func:`plan_for` the cluster ``cluster_id`` (``ups_id``: a shutdown for that UPS; ``node_ids``:
    only these of its nodes)."""
    inputs = plan_inputs(session, settings, cluster_id, ups_id, node_ids)
    return await plan_for(inputs, settings, force=force)


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
