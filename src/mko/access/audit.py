"""The audit of authentication events, pruned by age and count."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from mko.platform.db.models.access import AuthEvent
from mko.platform.db.models.base import utcnow
from mko.platform.settings import Settings
from mko.platform.validation import printable

__all__ = ["prune_auth_events", "record_auth_event"]

log = logging.getLogger("mko.auth")


def record_auth_event(
    session: Session, settings: Settings, kind: str, principal: str, source: str, detail: str
) -> None:
    """Log and keep a failed login or denied action (never with the secret that was tried); old events
    are pruned as ``settings`` say.

    The name tried, the address and the path are the caller's: they are escaped and cut
    (:func:`mko.platform.validation.printable`) before they reach the log line or the table.
    """
    principal, source, detail = printable(principal, 100), printable(source, 100), printable(detail, 300)
    log.warning("auth %s: %s from %s: %s", kind, principal or "-", source or "-", detail)
    event = AuthEvent(kind=kind, principal=principal, source=source, detail=detail)
    session.add(event)
    session.commit()
    if event.id % PRUNE_EVERY == 0:
        prune_auth_events(session, settings.auth_events_keep_days, settings.auth_events_keep_max)


#: Every this many auth events, the old ones are pruned (a flood of failures cannot fill the disk).
PRUNE_EVERY = 100


def prune_auth_events(session: Session, keep_days: float, keep_max: int) -> int:
    """Delete auth events older than ``keep_days`` and all but the newest ``keep_max``; return how many."""
    newest = session.scalar(select(func.max(AuthEvent.id))) or 0
    too_old = AuthEvent.created_at < utcnow() - timedelta(days=keep_days)
    removed = session.execute(delete(AuthEvent).where(too_old | (AuthEvent.id <= newest - keep_max)))
    session.commit()
    count = int(getattr(removed, "rowcount", 0) or 0)
    if count:
        log.info("pruned %d auth event(s) (kept %g days, at most %d)", count, keep_days, keep_max)
    return count
