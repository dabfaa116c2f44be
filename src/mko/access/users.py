"""Users: create, list, remove, passwords (argon2) and the first administrator."""

from __future__ import annotations

import logging
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.platform.db.models.access import Role, User, WebSession
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.settings import Settings

__all__ = [
    "authenticate_password",
    "create_user",
    "ensure_first_admin",
    "list_users",
    "password_hasher",
    "remove_user",
    "set_password",
]

log = logging.getLogger("mko.auth")

# OWASP's weakest recommended argon2id profile (19 MiB, 2 passes) as memory x passes: below it, a server
# is warned once (test suites set far less on purpose).
_WEAK_BELOW = 19 * 1024 * 2


def password_hasher(settings: Settings) -> PasswordHasher:
    """The argon2id hasher of ``settings.password_hash_*`` (one per set of parameters)."""
    return _hasher(
        settings.password_hash_time_cost,
        settings.password_hash_memory_cost,
        settings.password_hash_parallelism,
    )


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_cost: int, parallelism: int) -> PasswordHasher:
    if time_cost * memory_cost < _WEAK_BELOW:
        log.warning(
            "password hashing is weak (argon2 t=%d, %d KiB, p=%d): fine for tests, not for a server;"
            " unset MKO_PASSWORD_HASH_* to use the defaults",
            time_cost,
            memory_cost,
            parallelism,
        )
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)


MIN_PASSWORD = 8


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError("password", f"must be at least {MIN_PASSWORD} characters")


def _check_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise InputError("username", "use letters, digits and . _ - @ (at most 64)")
    return name


def create_user(session: Session, settings: Settings, username: str, password: str, role: Role) -> User:
    """Add a user with an argon2-hashed password."""
    name = _check_username(username)
    _check_password(password)
    user = User(username=name, password_hash=password_hasher(settings).hash(password), role=role)
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
            raise ConflictError(
                "cannot remove the last admin: add another first (`mko user add NAME --role admin`)"
            )
    session.delete(user)
    session.commit()
    log.info("user %s removed", username)


def set_password(session: Session, settings: Settings, username: str, password: str) -> None:
    """Change a password and end the user's web sessions."""
    user = _user(session, username)
    _check_password(password)
    user.password_hash = password_hasher(settings).hash(password)
    for web_session in session.scalars(select(WebSession).where(WebSession.user_id == user.id)):
        session.delete(web_session)
    session.commit()
    log.info("password of %s changed", username)


def ensure_first_admin(session: Session, settings: Settings, password: str | None) -> str | None:
    """Create ``admin`` when there are no users; returns a generated password (to print once) or None."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(15)
    try:
        create_user(session, settings, "admin", password, Role.ADMIN)
    except ConflictError:
        # Another `mko serve` on the same PostgreSQL database created it at the same moment (mko.ha).
        session.rollback()
        return None
    return generated


def authenticate_password(session: Session, settings: Settings, username: str, password: str) -> User | None:
    """The user when the password is right and the account enabled.

    A hash made with other parameters than today's settings (stronger or cheaper) is replaced by one
    made with them, now that the password is known.
    """
    hasher = password_hasher(settings)
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or user.disabled:
        # Spend the same time as a real check so user names cannot be probed by timing.
        hasher.hash(password)
        return None
    try:
        hasher.verify(user.password_hash, password)
    except VerificationError:
        return None
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
        session.commit()
        log.info("password hash of %s renewed with the current argon2 parameters", user.username)
    return user
