"""``/metrics`` in the Prometheus text format (prometheus-client), read from what mko already records.

Series (all prefixed ``mko_``):

==========================================  =========  ===============================================
nodes{cluster,state}                        gauge      nodes per cluster that are up / down / unknown
node_up{cluster,node}                       gauge      1 up, 0 down, per probed node
reachability_checked_timestamp_seconds      gauge      when the background refresher last probed
wake_attempts_total{method}                 counter    node wakes attempted (one per node per wake)
wake_successes_total{method}                counter    ... that ended up (verified) or sent (unverified)
wake_failures_total{method}                 counter    ... that failed or were not up before the timeout
wake_packets_total{method}                  counter    power-on requests sent (magic packets, API calls)
wake_time_to_up_seconds{method}             histogram  from the start of a verified wake to the node up
operations_total{kind,status}               counter    finished operations
operation_duration_seconds{kind}            histogram  finished operations' durations
operations_running{kind}                    gauge      operations running now
rule_executions_total{rule,cluster}         counter    a power rule's executions (its own counters)
rule_successes_total / rule_failures_total  counter    ... that succeeded / failed
ups_status{ups,flag}                        gauge      1 for each ups.status token now (OL, OB, LB, …)
ups_on_battery{ups}                         gauge      1 on battery, 0 on mains
ups_battery_charge_percent{ups}             gauge      battery.charge
ups_battery_runtime_seconds{ups}            gauge      battery.runtime
ups_comm_ok{ups}                            gauge      1 when the last read of the UPS succeeded
ups_last_update_timestamp_seconds{ups}      gauge      time of the last good reading
==========================================  =========  ===============================================

Wake and operation series are computed from the operation log, so wakes run by the CLI or by another
process count as well as the server's own, and totals survive restarts. Each scrape reads only the
operations finished since the previous scrape. Node states come from the background reachability
refresher (``mko.wol.reachability.Refresher``). UPS series come from the running UPS monitor's own view of
each UPS (``UpsMonitor.snapshot``): the same figures ``mko ups status`` shows, no extra reads of upsd.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from mko.platform.db.models.inventory import Cluster, Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.rules import PowerRule

__all__ = [
    "CONTENT_TYPE",
    "MetricsCollector",
    "UpsSource",
    "make_registry",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WAKE_KIND_PREFIX = "wol_wake"
TIME_TO_UP_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_FINISHED = (
    OperationStatus.SUCCEEDED,
    OperationStatus.PARTIAL,
    OperationStatus.FAILED,
    OperationStatus.CANCELLED,
)


# ------------------------------------------------------------------ UPS state, read from the monitor

#: Returns the UPS monitor's ``ups status`` documents (``UpsMonitor.snapshot``), one per UPS read so far.
UpsSource = Callable[[], list[dict[str, Any]]]


def _no_ups() -> list[dict[str, Any]]:
    return []


# ------------------------------------------------------------------ accumulated history


@dataclass
class _Histogram:
    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        counts = self.counts or [0] * (len(self.bounds) + 1)
        cumulative, result = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], counts, strict=True):
            cumulative += count
            result.append((bound, float(cumulative)))
        return result


@dataclass
class _History:
    """Totals from finished operations; ``seen_upto``/``pending`` make each scrape read only what is new."""

    seen_upto: int = 0
    pending: set[int] = field(default_factory=set)
    wake_attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    wake_successes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    wake_failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    wake_packets: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    time_to_up: dict[str, _Histogram] = field(default_factory=dict)
    operations: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    durations: dict[str, _Histogram] = field(default_factory=dict)

    def scan(self, session: Session) -> None:
        query = (
            select(Operation)
            .options(selectinload(Operation.steps))
            .where(or_(Operation.id > self.seen_upto, Operation.id.in_(self.pending)))
            .order_by(Operation.id)
        )
        for operation in session.scalars(query):
            self.seen_upto = max(self.seen_upto, operation.id)
            if operation.status not in _FINISHED:
                self.pending.add(operation.id)
                continue
            self.pending.discard(operation.id)
            self._account(operation)

    def _account(self, operation: Operation) -> None:
        self.operations[(operation.kind, operation.status.value)] += 1
        if operation.started_at is not None and operation.finished_at is not None:
            seconds = (operation.finished_at - operation.started_at).total_seconds()
            self.durations.setdefault(operation.kind, _Histogram(DURATION_BUCKETS)).observe(max(seconds, 0.0))
        if not operation.kind.startswith(WAKE_KIND_PREFIX):
            return
        for step in operation.steps:
            method, state = step.detail.get("method"), step.detail.get("state")
            if not method or not state:
                continue  # skipped nodes (WoL disabled, no MAC) were never attempted
            self.wake_attempts[method] += 1
            self.wake_packets[method] += int(step.detail.get("attempts") or 0)
            if state in ("up", "sent"):
                self.wake_successes[method] += 1
            else:
                self.wake_failures[method] += 1
            up_after = step.detail.get("up_after")
            if state == "up" and up_after is not None:
                self.time_to_up.setdefault(method, _Histogram(TIME_TO_UP_BUCKETS)).observe(float(up_after))


# ------------------------------------------------------------------ the collector


def _counter(
    name: str, documentation: str, label: str, values: dict[str, int], keys: Sequence[str] = ()
) -> CounterMetricFamily:
    """A counter family with one sample per key (``keys`` adds zero samples, so rates start at 0)."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key in sorted(set(values) | set(keys)):
        family.add_metric([key], values.get(key, 0))
    return family


class MetricsCollector(Collector):
    """Builds every mko series at scrape time from the database and the UPS board."""

    def __init__(self, session_factory: sessionmaker[Session], ups_source: UpsSource = _no_ups) -> None:
        self.session_factory = session_factory
        self.ups_source = ups_source
        self._history = _History()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """All series, consistent with one read of the database."""
        with self._lock, self.session_factory() as session:
            self._history.scan(session)
            metrics = [
                *self._nodes(session),
                *self._wakes(),
                *self._operations(session),
                *self._rules(session),
                *self._ups(),
            ]
        yield from metrics

    def _nodes(self, session: Session) -> list[Metric]:
        rows = session.execute(
            select(Cluster.name, Node.hostname, Node.reachable, Node.reachability_checked_at)
            .select_from(Node)
            .outerjoin(Cluster, Node.cluster_id == Cluster.id)
            .order_by(Node.id)
        ).all()
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for cluster in session.scalars(select(Cluster.name)):
            for state in ("up", "down", "unknown"):
                counts[(cluster, state)] = 0
        nodes = GaugeMetricFamily(
            "mko_nodes", "Nodes per cluster by last known reachability", labels=["cluster", "state"]
        )
        node_up = GaugeMetricFamily(
            "mko_node_up", "1 when the node answered its last probe, 0 when not", labels=["cluster", "node"]
        )
        checked: datetime | None = None
        for cluster, hostname, reachable, checked_at in rows:
            state = "unknown" if reachable is None else ("up" if reachable else "down")
            counts[(cluster or "", state)] += 1
            if reachable is not None:
                node_up.add_metric([cluster or "", hostname], 1.0 if reachable else 0.0)
            if checked_at is not None and (checked is None or checked_at > checked):
                checked = checked_at
        for (cluster, state), count in sorted(counts.items()):
            nodes.add_metric([cluster, state], count)
        metrics: list[Metric] = [nodes, node_up]
        if checked is not None:
            metrics.append(
                GaugeMetricFamily(
                    "mko_reachability_checked_timestamp_seconds",
                    "When the background refresher last probed the nodes (Unix time)",
                    value=checked.timestamp(),
                )
            )
        return metrics

    def _wakes(self) -> list[Metric]:
        history = self._history
        time_to_up = HistogramMetricFamily(
            "mko_wake_time_to_up_seconds",
            "Seconds from the start of a verified wake until the node answered",
            labels=["method"],
        )
        for method, histogram in sorted(history.time_to_up.items()):
            time_to_up.add_metric([method], histogram.buckets(), histogram.total)
        methods = list(history.wake_attempts)
        return [
            _counter("mko_wake_attempts", "Node wakes attempted", "method", history.wake_attempts),
            _counter(
                "mko_wake_successes", "Wakes that ended up or sent", "method", history.wake_successes, methods
            ),
            _counter(
                "mko_wake_failures",
                "Wakes that failed or timed out",
                "method",
                history.wake_failures,
                methods,
            ),
            _counter("mko_wake_packets", "Power-on requests sent", "method", history.wake_packets, methods),
            time_to_up,
        ]

    def _operations(self, session: Session) -> list[Metric]:
        history = self._history
        total = CounterMetricFamily("mko_operations", "Finished operations", labels=["kind", "status"])
        for (kind, status), count in sorted(history.operations.items()):
            total.add_metric([kind, status], count)
        durations = HistogramMetricFamily(
            "mko_operation_duration_seconds", "Durations of finished operations", labels=["kind"]
        )
        for kind, histogram in sorted(history.durations.items()):
            durations.add_metric([kind], histogram.buckets(), histogram.total)
        running = GaugeMetricFamily("mko_operations_running", "Operations running now", labels=["kind"])
        query = (
            select(Operation.kind, func.count())
            .where(Operation.status == OperationStatus.RUNNING)
            .group_by(Operation.kind)
        )
        for kind, count in session.execute(query):
            running.add_metric([kind], count)
        return [total, durations, running]

    def _rules(self, session: Session) -> list[Metric]:
        labels = ["rule", "cluster"]
        executions = CounterMetricFamily("mko_rule_executions", "Power rule executions", labels=labels)
        successes = CounterMetricFamily(
            "mko_rule_successes", "Power rule executions that succeeded", labels=labels
        )
        failures = CounterMetricFamily(
            "mko_rule_failures", "Power rule executions that failed", labels=labels
        )
        rows = session.execute(
            select(PowerRule, Cluster.name)
            .join(Cluster, PowerRule.cluster_id == Cluster.id)
            .order_by(PowerRule.id)
        )
        for rule, cluster in rows:
            key = [f"{rule.name} (#{rule.id})", cluster]
            executions.add_metric(key, rule.execution_count)
            successes.add_metric(key, rule.success_count)
            failures.add_metric(key, rule.failure_count)
        return [executions, successes, failures]

    def _ups(self) -> list[Metric]:
        status = GaugeMetricFamily(
            "mko_ups_status", "1 for each current ups.status token", labels=["ups", "flag"]
        )
        on_battery = GaugeMetricFamily("mko_ups_on_battery", "1 on battery, 0 on mains", labels=["ups"])
        charge = GaugeMetricFamily("mko_ups_battery_charge_percent", "battery.charge", labels=["ups"])
        runtime = GaugeMetricFamily("mko_ups_battery_runtime_seconds", "battery.runtime", labels=["ups"])
        comm = GaugeMetricFamily(
            "mko_ups_comm_ok", "1 when the last read of the UPS succeeded", labels=["ups"]
        )
        updated = GaugeMetricFamily(
            "mko_ups_last_update_timestamp_seconds",
            "Time of the last good reading (Unix time)",
            labels=["ups"],
        )
        for doc in sorted(self.ups_source(), key=lambda d: str(d.get("name"))):
            name = str(doc.get("name"))
            comm.add_metric([name], 1.0 if doc.get("reachable") else 0.0)
            for token in doc.get("tokens") or []:
                status.add_metric([name, str(token)], 1.0)
            if doc.get("on_battery") is not None:
                on_battery.add_metric([name], 1.0 if doc["on_battery"] else 0.0)
            if doc.get("battery_charge") is not None:
                charge.add_metric([name], float(doc["battery_charge"]))
            if doc.get("battery_runtime") is not None:
                runtime.add_metric([name], float(doc["battery_runtime"]))
            if doc.get("last_update"):
                updated.add_metric([name], datetime.fromisoformat(str(doc["last_update"])).timestamp())
        return [status, on_battery, charge, runtime, comm, updated]


def make_registry(collector: MetricsCollector) -> CollectorRegistry:
    """A registry of its own per app (tests build many apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The exposition text of every series."""
    return generate_latest(registry)
