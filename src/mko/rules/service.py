"""Power rules: create, read, enable, delete, and the thresholds they set."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.cluster.plan import last_duration
from mko.inventory.clusters import get_cluster
from mko.platform.db.models.rules import ClusterAction, PowerRule
from mko.platform.db.models.ups import UPS, PowerEvent
from mko.platform.errors import InputError, NotFoundError
from mko.platform.missing import does_not_exist
from mko.platform.settings import Settings
from mko.rules.actions import ACTIONS
from mko.rules.schemas import RuleCreate

if TYPE_CHECKING:
    from mko.rules.actions import ClusterActionHandler

__all__ = [
    "create_rule",
    "delete_rule",
    "get_rule",
    "list_rules",
    "low_battery_thresholds",
    "set_rule_enabled",
]

log = logging.getLogger("mko.rules")


MAX_DELAY = 86_400
MAX_PRIORITY = 10_000
# A power_restored rule acts once mains has held this long (unless created with another stable_for):
# mains that flickers back for a few seconds after a long cut must not wake a cluster into the next one.
DEFAULT_STABLE_FOR = 10


def _missing_action_message(action: ClusterAction) -> str:
    return (
        f"{action.value} is not available in this version of mko, so a rule could never carry it out;"
        f" available: {', '.join(a.value for a in ACTIONS)}"
    )


def _checked(
    session: Session, data: RuleCreate, actions: Mapping[ClusterAction, ClusterActionHandler] | None
) -> dict[str, Any]:
    """Every field of a rule checked (nothing is stored when one is wrong): the columns to store."""
    available = ACTIONS if actions is None else actions
    if session.get(UPS, data.ups_id) is None:
        raise InputError("ups_id", does_not_exist("UPS", data.ups_id))
    if data.cluster_action not in available:
        raise InputError("cluster_action", _missing_action_message(data.cluster_action))
    try:
        get_cluster(session, data.cluster_id)
    except NotFoundError:
        raise InputError("cluster_id", does_not_exist("cluster", data.cluster_id)) from None
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
    return {
        "name": name,
        "ups_id": data.ups_id,
        "cluster_id": data.cluster_id,
        "power_event": data.power_event,
        "cluster_action": data.cluster_action,
        "battery_threshold": data.battery_threshold,
        "action_delay": data.action_delay,
        "priority": data.priority,
        "enabled": data.enabled,
        "recover_after_wake": data.recover_after_wake,
        "min_charge": data.min_charge,
        "stable_for": stable_for,
        "target": data.target.value,
    }


def create_rule(
    session: Session, data: RuleCreate, actions: Mapping[ClusterAction, ClusterActionHandler] | None = None
) -> PowerRule:
    """Add a rule after checking every field; nothing is stored when one is wrong."""
    rule = PowerRule(**_checked(session, data, actions), execution_count=0, success_count=0, failure_count=0)
    session.add(rule)
    session.commit()
    log.info("power rule %s created: %s", rule.id, rule.name)
    return rule


def update_rule(
    session: Session,
    rule_id: int,
    data: RuleCreate,
    actions: Mapping[ClusterAction, ClusterActionHandler] | None = None,
) -> PowerRule:
    """Replace a rule's settings (its counters stay), with the checks of :func:`create_rule`."""
    rule = get_rule(session, rule_id)
    for column, value in _checked(session, data, actions).items():
        setattr(rule, column, value)
    session.commit()
    log.info("power rule %s changed: %s", rule.id, rule.name)
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
        needs.setdefault(ups_id, {})[cluster_id] = runtime_need(settings, last_duration(session, cluster_id))
    return needs
