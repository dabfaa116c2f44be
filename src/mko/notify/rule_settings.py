"""The notification URLs of one power rule, stored encrypted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from mko.notify.delivery import decrypt_urls, encrypt_urls, masked, validate_urls
from mko.platform.db.models.rules import PowerRule
from mko.platform.errors import NotFoundError
from mko.platform.settings import Settings

__all__ = ["RuleNotifications", "configure_rule", "rule_notifications"]


class RuleNotifications(BaseModel):
    """A rule's notification settings as shown: flags, and its URLs with secrets hidden."""

    rule_id: int
    notify_on_trigger: bool
    notify_on_completion: bool
    notify_on_failure: bool
    notify_urls: list[str]
    global_urls: int


def rule_notifications(session: Session, settings: Settings, rule_id: int) -> RuleNotifications:
    """The notification settings of one rule."""
    rule = session.get(PowerRule, rule_id)
    if rule is None:
        raise NotFoundError("rule", rule_id)
    return RuleNotifications(
        rule_id=rule.id,
        notify_on_trigger=rule.notify_on_trigger,
        notify_on_completion=rule.notify_on_completion,
        notify_on_failure=rule.notify_on_failure,
        notify_urls=[masked(u) for u in decrypt_urls(settings, rule.notify_urls_encrypted)],
        global_urls=len(settings.notify_urls),
    )


def configure_rule(
    session: Session,
    settings: Settings,
    rule_id: int,
    *,
    on_trigger: bool | None = None,
    on_completion: bool | None = None,
    on_failure: bool | None = None,
    urls: Sequence[str] | None = None,
) -> RuleNotifications:
    """Change a rule's flags and/or replace its URLs (an empty list removes them); None keeps a value."""
    rule = session.get(PowerRule, rule_id)
    if rule is None:
        raise NotFoundError("rule", rule_id)
    changes: dict[str, Any] = {}
    if urls is not None:
        changes["notify_urls_encrypted"] = encrypt_urls(settings, validate_urls(urls))
    for name, value in (
        ("notify_on_trigger", on_trigger),
        ("notify_on_completion", on_completion),
        ("notify_on_failure", on_failure),
    ):
        if value is not None:
            changes[name] = value
    for name, value in changes.items():
        setattr(rule, name, value)
    session.commit()
    return rule_notifications(session, settings, rule_id)
