"""Web sessions: created at login, stored hashed, ended at logout or expiry."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy.orm import Session

from mko.access.principal import Principal
from mko.access.tokens import token_hash
from mko.platform.db.models.access import User, WebSession
from mko.platform.db.models.base import utcnow

__all__ = ["create_session", "delete_session", "session_principal"]


def create_session(session: Session, user: User, lifetime: timedelta) -> tuple[WebSession, str]:
    """A web session for a logged-in user, and the cookie value: given out once, stored hashed."""
    cookie = secrets.token_urlsafe(32)
    web_session = WebSession(
        id=token_hash(cookie),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + lifetime,
    )
    session.add(web_session)
    session.commit()
    return web_session, cookie


def _web_session(session: Session, cookie: str) -> WebSession | None:
    # The cookie is the caller's: anything longer than a session id is no session id.
    return session.get(WebSession, token_hash(cookie)) if 0 < len(cookie) <= 200 else None


def session_principal(session: Session, cookie: str) -> Principal | None:
    """The principal of a live web session, from the cookie value."""
    web_session = _web_session(session, cookie)
    if web_session is None:
        return None
    if web_session.expires_at <= utcnow():
        session.delete(web_session)
        session.commit()
        return None
    user = session.get(User, web_session.user_id)
    if user is None or user.disabled:
        return None
    return Principal(
        name=user.username, role=user.role, kind="user", user_id=user.id, csrf_token=web_session.csrf_token
    )


def delete_session(session: Session, cookie: str) -> None:
    """Log out."""
    web_session = _web_session(session, cookie)
    if web_session is not None:
        session.delete(web_session)
        session.commit()
