"""The notifications mko sends: a rule triggered or finished, a UPS event, a schedule
that failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import object_session

from mko.notify.delivery import Message, decrypt_urls, send
from mko.platform.db.models.inventory import Cluster
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.rules import PowerRule
from mko.platform.db.models.schedules import Schedule
from mko.platform.settings import Settings

if TYPE_CHECKING:
    from mko.notify.delivery import Delivery

__all__ = ["rule_finished", "rule_triggered", "schedule_failed", "ups_event", "ups_event_hook"]


def _cluster_name(rule: PowerRule, cluster: Cluster | str | None) -> str:
    if isinstance(cluster, str):
        return cluster
    if cluster is None:
        session = object_session(rule)
        cluster = session.get(Cluster, rule.cluster_id) if session is not None else None
    return cluster.name if cluster is not None else f"#{rule.cluster_id}"


def _rule_fields(rule: PowerRule, event: str, cluster: Cluster | str | None) -> dict[str, str]:
    return {
        "event": str(event),
        "cluster": _cluster_name(rule, cluster),
        "rule": f"{rule.name} (#{rule.id})",
        "action": rule.cluster_action.value,
    }


def rule_triggered(
    settings: Settings, rule: PowerRule, *, event: str, cluster: Cluster | str | None = None
) -> Delivery | None:
    """Call when ``rule`` fires on ``event`` (before its delay and action); sends if notify_on_trigger.

    ``cluster`` (a row or a name) is looked up from the rule's session when not given.
    """
    if not rule.notify_on_trigger:
        return None
    fields = _rule_fields(rule, event, cluster)
    fields["outcome"] = "triggered"
    message = Message(
        f"mko: {event} on {fields['cluster']} — rule {rule.name!r} triggered", fields, "warning"
    )
    return send(settings, message, decrypt_urls(settings, rule.notify_urls_encrypted))


def rule_finished(
    settings: Settings,
    rule: PowerRule,
    *,
    event: str,
    cluster: Cluster | str | None = None,
    outcome: OperationStatus | str,
    summary: str = "",
    operation_id: int | None = None,
) -> Delivery | None:
    """Call when the rule's execution ended: failed or partial → notify_on_failure; succeeded or
    cancelled → notify_on_completion."""
    outcome = OperationStatus(outcome)
    failed = outcome in (OperationStatus.FAILED, OperationStatus.PARTIAL)
    if not (rule.notify_on_failure if failed else rule.notify_on_completion):
        return None
    fields = _rule_fields(rule, event, cluster)
    fields |= {
        "outcome": outcome.value,
        "summary": summary,
        "operation": f"#{operation_id}" if operation_id is not None else "",
    }
    message = Message(
        f"mko: {event} on {fields['cluster']} — {rule.cluster_action.value} {outcome.value}",
        fields,
        "failure" if failed else ("success" if outcome == OperationStatus.SUCCEEDED else "info"),
    )
    return send(settings, message, decrypt_urls(settings, rule.notify_urls_encrypted))


def ups_event(
    settings: Settings,
    *,
    ups: str,
    event: str,
    status_before: str | None = None,
    status_after: str | None = None,
    message: str = "",
) -> Delivery | None:
    """Call for every detected UPS event; goes to the global URLs (if ``notify_ups_events``)."""
    if not settings.notify_ups_events:
        return None
    kind = "success" if event in ("power_restored", "comm_restored") else "warning"
    if event in ("critical_battery", "ups_shutdown"):
        kind = "failure"
    fields = {
        "event": event,
        "ups": ups,
        "status before": status_before or "unknown",
        "status after": status_after or "unknown",
        "detail": message,
    }
    return send(settings, Message(f"mko: UPS {ups}: {event}", fields, kind))


def ups_event_hook(settings: Settings) -> Callable[[Any, Any], None]:
    """An ``on_event`` hook for ``mko.ups.monitor.UpsMonitor``: notifies each stored UPS event."""

    def hook(target: Any, event: Any) -> None:
        ups_event(
            settings,
            ups=str(target.name),
            event=str(getattr(event.event, "value", event.event)),
            status_before=event.status_before,
            status_after=event.status_after,
            message=event.message,
        )

    return hook


def schedule_failed(settings: Settings, schedule: Schedule, operation: Operation) -> Delivery | None:
    """Call when a scheduled run failed, only partly succeeded, was not started or was missed."""
    target = f"cluster #{schedule.cluster_id}" if schedule.cluster_id else f"node #{schedule.node_id}"
    fields = {
        "event": operation.kind,
        "schedule": f"{schedule.name} (#{schedule.id})",
        "target": operation.parameters.get("target_name") or target,
        "cluster": str(operation.parameters.get("cluster") or ""),
        "outcome": operation.status.value,
        "summary": operation.summary,
        "operation": f"#{operation.id}",
    }
    title = f"mko: schedule {schedule.name!r} {operation.status.value}: {operation.summary}"
    return send(
        settings,
        Message(title[:250], fields, "failure"),
        decrypt_urls(settings, schedule.notify_urls_encrypted),
    )
