"""Notification settings of power rules, and test notifications."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from mko.http.deps import SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.notify import rule_settings as notify_rule_settings
from mko.notify.delivery import send_test
from mko.notify.rule_settings import RuleNotifications, configure_rule
from mko.platform.errors import ConflictError
from mko.platform.validation import FREE_TEXT, InputModel

router = APIRouter(tags=["monitoring"], route_class=MkoRoute)


class RuleNotificationsUpdate(InputModel):
    """Fields to change; ``notify_urls`` replaces the rule's URLs (an empty list removes them)."""

    notify_on_trigger: bool | None = None
    notify_on_completion: bool | None = None
    notify_on_failure: bool | None = None
    notify_urls: Annotated[list[str] | None, FREE_TEXT] = Field(
        default=None, description="apprise URLs; stored encrypted"
    )


class TestNotification(InputModel):
    """Extra URLs to try besides the global ones."""

    notify_urls: Annotated[list[str], FREE_TEXT] = []


class TestResult(BaseModel):
    """How a test notification went."""

    targets: int
    delivered: bool
    failed: list[str]


@router.get("/api/notifications/rules/{rule_id:int}", tags=["notifications"])
def rule_notifications(session: SessionDep, settings: SettingsDep, rule_id: int) -> RuleNotifications:
    """A power rule's notification flags and URLs (secrets hidden)."""
    return notify_rule_settings.rule_notifications(session, settings, rule_id)


@router.put("/api/notifications/rules/{rule_id:int}", tags=["notifications"])
def configure_rule_notifications(
    session: SessionDep, settings: SettingsDep, rule_id: int, body: RuleNotificationsUpdate
) -> RuleNotifications:
    """Change when a rule notifies and where to (besides the global URLs)."""
    return configure_rule(
        session,
        settings,
        rule_id,
        on_trigger=body.notify_on_trigger,
        on_completion=body.notify_on_completion,
        on_failure=body.notify_on_failure,
        urls=body.notify_urls,
    )


@router.post("/api/notifications/test", tags=["notifications"])
async def send_test_notification(settings: SettingsDep, body: TestNotification | None = None) -> TestResult:
    """Send a test notification to the global URLs and the URLs given, and say whether it arrived."""
    delivery = send_test(settings, (body or TestNotification()).notify_urls)
    if delivery is None:
        raise ConflictError("no notification URL is configured (MKO_NOTIFY_URLS) and none was given")
    await asyncio.to_thread(delivery.wait, settings.notify_timeout + 5)
    return TestResult(targets=delivery.targets, delivered=bool(delivery.ok), failed=delivery.failed)
