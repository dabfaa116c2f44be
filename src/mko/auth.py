"""Users, roles, API tokens, web sessions, and the audit of failed logins and denied actions.

Roles: ``admin`` ⊃ ``operator`` ⊃ ``viewer``; ``agent`` is its own role for remote wake agents.
Passwords are hashed with argon2; tokens and session ids are random, given out once, and stored only
as SHA-256 hashes, so a copy of the database does not hand out working credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.platform.db.models.access import ApiToken, AuthEvent, Role, User, WebSession
from mko.platform.db.models.base import utcnow
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.settings import get_settings
from mko.platform.validation import check_text, printable

__all__ = [
    "TOKEN_PREFIX",
    "LoginThrottle",
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
    "prune_auth_events",
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
#: How exactly a token's ``last_used_at`` follows its use.
LAST_USED_PRECISION = timedelta(minutes=1)


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
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        # Not on every request: a burst of reads would otherwise be a burst of writes on one row.
        token.last_used_at = now
        session.commit()
    return Principal(name=token.name, role=token.role, kind="token", user_id=token.user_id)


def create_session(session: Session, user: User, lifetime: timedelta) -> tuple[WebSession, str]:
    """A web session for a logged-in user, and the cookie value: given out once, stored hashed."""
    cookie = secrets.token_urlsafe(32)
    web_session = WebSession(
        id=_token_hash(cookie),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + lifetime,
    )
    session.add(web_session)
    session.commit()
    return web_session, cookie


def _web_session(session: Session, cookie: str) -> WebSession | None:
    # The cookie is the caller's: anything longer than a session id is no session id.
    return session.get(WebSession, _token_hash(cookie)) if 0 < len(cookie) <= 200 else None


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


def record_auth_event(session: Session, kind: str, principal: str, source: str, detail: str) -> None:
    """Log and keep a failed login or denied action (never with the secret that was tried).

    The name tried, the address and the path are the caller's: they are escaped and cut
    (:func:`mko.platform.validation.printable`) before they reach the log line or the table.
    """
    principal, source, detail = printable(principal, 100), printable(source, 100), printable(detail, 300)
    log.warning("auth %s: %s from %s: %s", kind, principal or "-", source or "-", detail)
    event = AuthEvent(kind=kind, principal=principal, source=source, detail=detail)
    session.add(event)
    session.commit()
    if event.id % PRUNE_EVERY == 0:
        settings = get_settings()
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


@dataclass
class _Backoff:
    failures: int = 0
    last: float = 0.0


class LoginThrottle:
    """Slows password guessing without locking the real user out.

    - **Per account** (the name tried, known or not): after ``free_failures`` failures each further
      attempt waits 1, 2, 4 … seconds after the last failure, at most ``backoff_max``; only a good
      login to *that* account resets it, so another account's login never clears it.
    - **Per address**: at most ``attempts`` failures within ``window`` seconds (password spraying
      across accounts); they only expire, no login resets them.
    - **Known browsers**: a good login leaves a device cookie naming the account (HMAC-signed). A login
      carrying it for that account skips the two limits above and has its own (``attempts`` failures
      per ``window`` for that cookie): whoever hammers an account or shares the user's address cannot
      keep the real user out of a browser they signed in from before.

    State is in memory, per process, bounded in size; a restart forgets it.
    """

    MAX_ENTRIES = 10_000

    def __init__(
        self,
        attempts: int,
        window: float,
        *,
        free_failures: int = 3,
        backoff_max: float = 300.0,
        key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.window = window
        self.free_failures = free_failures
        self.backoff_max = backoff_max
        self._key = key or secrets.token_bytes(32)
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts: dict[str, _Backoff] = {}
        self._addresses: dict[str, deque[float]] = {}
        self._devices: dict[str, deque[float]] = {}

    # ---------------------------------------------------------------- device cookies

    def device_cookie(self, username: str) -> str:
        """A new device cookie for a browser that just signed in as ``username``."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._sign(nonce, username)}"

    def device_of(self, cookie: str | None, username: str) -> str | None:
        """The device id of a cookie issued to this account's browser, else None."""
        if not cookie or len(cookie) > 200:
            return None
        nonce, _, mac = cookie.partition(".")
        if not nonce or not hmac.compare_digest(mac, self._sign(nonce, username)):
            return None
        return nonce

    def _sign(self, nonce: str, username: str) -> str:
        message = f"{nonce}\0{_account_key(username)}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    # ---------------------------------------------------------------- the limits

    def retry_after(self, username: str, address: str, device: str | None = None) -> float:
        """Seconds until this attempt may be made (0 when it may now)."""
        now = self._clock()
        with self._lock:
            if device is not None:
                return self._window_wait(self._devices, device, now)
            wait = self._window_wait(self._addresses, address, now)
            backoff = self._accounts.get(_account_key(username))
            if backoff is not None and backoff.failures >= self.free_failures:
                delay = min(2.0 ** (backoff.failures - self.free_failures), self.backoff_max)
                wait = max(wait, backoff.last + delay - now)
            return max(0.0, wait)

    def failed(self, username: str, address: str, device: str | None = None) -> None:
        """Count a failed attempt."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            if device is not None:
                self._devices.setdefault(device, deque()).append(now)
                return
            self._addresses.setdefault(address, deque()).append(now)
            backoff = self._accounts.setdefault(_account_key(username), _Backoff())
            backoff.failures += 1
            backoff.last = now

    def succeeded(self, username: str, device: str | None = None) -> None:
        """A good login: this account's backoff (and this device's failures) start over."""
        with self._lock:
            self._accounts.pop(_account_key(username), None)
            if device is not None:
                self._devices.pop(device, None)

    def _window_wait(self, table: dict[str, deque[float]], key: str, now: float) -> float:
        failures = table.get(key)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.attempts:
            return 0.0
        return failures[-self.attempts] + self.window - now

    def _trim(self, now: float) -> None:
        """Forget entries nobody has failed with for a while, so guessing cannot fill the memory."""
        if len(self._accounts) + len(self._addresses) + len(self._devices) < self.MAX_ENTRIES:
            return
        horizon = now - max(self.window, self.backoff_max)
        for name in [k for k, v in self._accounts.items() if v.last <= horizon]:
            del self._accounts[name]
        for table in (self._addresses, self._devices):
            for key in [k for k, v in table.items() if not v or v[-1] <= horizon]:
                del table[key]
        if len(self._accounts) + len(self._addresses) + len(self._devices) >= self.MAX_ENTRIES:
            # Still full within the window: an attack from many names; keep the newest half.
            tables: tuple[dict[str, Any], ...] = (self._accounts, self._addresses, self._devices)
            for table in tables:
                for key in list(table)[: len(table) // 2]:
                    del table[key]


def _account_key(username: str) -> str:
    return username.strip().casefold()[:64]


def expires_in_days(days: float | None) -> timedelta | None:
    """A token lifetime from a number of days."""
    return None if days is None else timedelta(days=days)


def is_expired(value: datetime | None) -> bool:
    """Whether a timestamp is in the past."""
    return value is not None and value <= utcnow()
