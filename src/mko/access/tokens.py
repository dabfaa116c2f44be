"""API tokens: created once, stored hashed, revocable, with an expiry."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.access.principal import Principal
from mko.platform.db.models.access import ApiToken, Role
from mko.platform.db.models.base import utcnow
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.validation import check_text

__all__ = ["TOKEN_PREFIX", "authenticate_token", "create_token", "list_tokens", "revoke_token"]

log = logging.getLogger("mko.auth")


TOKEN_PREFIX = "mko_"  # noqa: S105 - a visible prefix, not a secret


#: How exactly a token's ``last_used_at`` follows its use.
LAST_USED_PRECISION = timedelta(minutes=1)


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


def expires_in_days(days: float | None) -> timedelta | None:
    """A token lifetime from a number of days."""
    return None if days is None else timedelta(days=days)


def is_expired(value: datetime | None) -> bool:
    """Whether a timestamp is in the past."""
    return value is not None and value <= utcnow()
