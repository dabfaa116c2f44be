"""Users, roles, API tokens, web sessions, and the audit of failed logins and denied actions.

Roles: ``admin`` ⊃ ``operator`` ⊃ ``viewer``; ``agent`` is its own role for remote wake agents.
Passwords are hashed with argon2; tokens and session ids are random, shown once, and stored hashed
(tokens) or server-side (sessions), so a database leak does not hand out working credentials.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.db.auth_models import ApiToken, AuthEvent, Role, User, WebSession
from mko.db.models import utcnow
from mko.errors import ConflictError, InputError, NotFoundError
from mko.validation import check_text

__all__ = [
    "TOKEN_PREFIX",
    "LoginLimiter",
    "Principal",
    "allows",
    "authenticate_password",
    "authenticate_token",
    "create_session",
    "create_token",
    "create_user",
    "delete_session",
    "ensure_first_admin",
    "list_tokens",
    "list_users",
    "record_auth_event",
    "remove_user",
    "revoke_token",
    "session_principal",
    "set_password",
]

log = logging.getLogger("mko.auth")
_hasher = PasswordHasher()
TOKEN_PREFIX = "mko_"  # noqa: S105 - a visible prefix, not a secret
_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
MIN_PASSWORD = 8


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (web or token of a user) or a named token, with its role."""

    name: str
    role: Role
    kind: str  # "user", "token", "session"
    user_id: int | None = None
    csrf_token: str | None = None

    @property
    def actor_name(self) -> str:
        """How operations record this caller."""
        return f"{self.kind}:{self.name}"


def allows(role: Role, required: Role) -> bool:
    """Whether ``role`` may do what ``required`` allows (agents only what agents may)."""
    if Role.AGENT in (required, role):
        return role in (required, Role.ADMIN) and required == Role.AGENT
    return _RANK[role] >= _RANK[required]


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError("password", f"must be at least {MIN_PASSWORD} characters")


def _check_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise InputError("username", "use letters, digits and . _ - @ (at most 64)")
    return name


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    """Add a user with an argon2-hashed password."""
    name = _check_username(username)
    _check_password(password)
    user = User(username=name, password_hash=_hasher.hash(password), role=role)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"user {name!r} already exists") from None
    log.info("user %s created with role %s", name, role.value)
    return user


def list_users(session: Session) -> list[User]:
    """All users by id."""
    return list(session.scalars(select(User).order_by(User.id)))


def _user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFoundError("user", username)
    return user


def remove_user(session: Session, username: str) -> None:
    """Delete a user with their tokens and sessions; the last admin cannot be removed."""
    user = _user(session, username)
    if user.role == Role.ADMIN:
        admins = session.scalar(select(func.count()).select_from(User).where(User.role == Role.ADMIN))
        if admins == 1:
            raise ConflictError("cannot remove the last admin")
    session.delete(user)
    session.commit()
    log.info("user %s removed", username)


def set_password(session: Session, username: str, password: str) -> None:
    """Change a password and end the user's web sessions."""
    user = _user(session, username)
    _check_password(password)
    user.password_hash = _hasher.hash(password)
    for web_session in session.scalars(select(WebSession).where(WebSession.user_id == user.id)):
        session.delete(web_session)
    session.commit()
    log.info("password of %s changed", username)


def ensure_first_admin(session: Session, password: str | None) -> str | None:
    """Create ``admin`` when there are no users; returns a generated password (to print once) or None."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(15)
    try:
        create_user(session, "admin", password, Role.ADMIN)
    except ConflictError:
        # Another `mko serve` on the same PostgreSQL database created it at the same moment (mko.ha).
        session.rollback()
        return None
    return generated


def authenticate_password(session: Session, username: str, password: str) -> User | None:
    """The user when the password is right and the account enabled."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or user.disabled:
        # Spend the same time as a real check so user names cannot be probed by timing.
        _hasher.hash(password)
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except VerificationError:
        return None
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session,
    name: str,
    role: Role,
    *,
    expires_in: timedelta | None = None,
    user_id: int | None = None,
) -> tuple[ApiToken, str]:
    """A new API token; the plain token is returned once and never stored."""
    if not check_text(name, "name", max_length=100).strip(" "):
        raise InputError("name", "a token needs a name (at most 100 characters)")
    if expires_in is not None and expires_in <= timedelta(0):
        raise InputError("expires", "must be in the future")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name.strip(),
        token_hash=_token_hash(plain),
        prefix=plain[:12],
        role=role,
        user_id=user_id,
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    session.add(token)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"a token named {name!r} already exists") from None
    log.info("token %s created with role %s", token.name, role.value)
    return token, plain


def list_tokens(session: Session) -> list[ApiToken]:
    """All tokens (hashes only) by id."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, name: str) -> ApiToken:
    """Revoke a token by name; it stops working at once."""
    token = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if token is None:
        raise NotFoundError("token", name)
    token.revoked_at = token.revoked_at or utcnow()
    session.commit()
    log.info("token %s revoked", name)
    return token


def authenticate_token(session: Session, plain: str) -> Principal | None:
    """The principal of a valid, unexpired, unrevoked token."""
    token = session.scalars(select(ApiToken).where(ApiToken.token_hash == _token_hash(plain))).first()
    now = utcnow()
    if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
        return None
    token.last_used_at = now
    session.commit()
    return Principal(name=token.name, role=token.role, kind="token", user_id=token.user_id)


def create_session(session: Session, user: User, lifetime: timedelta) -> WebSession:
    """A web session for a logged-in user."""
    web_session = WebSession(
        id=secrets.token_urlsafe(32),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + lifetime,
    )
    session.add(web_session)
    session.commit()
    return web_session


def session_principal(session: Session, session_id: str) -> Principal | None:
    """The principal of a live web session."""
    web_session = session.get(WebSession, session_id)
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


def delete_session(session: Session, session_id: str) -> None:
    """Log out."""
    web_session = session.get(WebSession, session_id)
    if web_session is not None:
        session.delete(web_session)
        session.commit()


def record_auth_event(session: Session, kind: str, principal: str, source: str, detail: str) -> None:
    """Log and keep a failed login or denied action (never with the secret that was tried)."""
    log.warning("auth %s: %s from %s: %s", kind, principal or "-", source or "-", detail)
    session.add(AuthEvent(kind=kind, principal=principal[:200], source=source[:200], detail=detail[:500]))
    session.commit()


class LoginLimiter:
    """At most ``attempts`` failed logins per client within ``window`` seconds."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _prune(self, client: str, now: float) -> deque[float]:
        failures = self._failures[client]
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0 when it may now)."""
        now = time.monotonic()
        failures = self._prune(client, now)
        if len(failures) < self.attempts:
            return 0.0
        return max(0.0, failures[0] + self.window - now)

    def failed(self, client: str) -> None:
        """Count a failed attempt."""
        self._prune(client, time.monotonic()).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        """Forget a client's failures after a good login."""
        self._failures.pop(client, None)


def expires_in_days(days: float | None) -> timedelta | None:
    """A token lifetime from a number of days."""
    return None if days is None else timedelta(days=days)


def is_expired(value: datetime | None) -> bool:
    """Whether a timestamp is in the past."""
    return value is not None and value <= utcnow()
