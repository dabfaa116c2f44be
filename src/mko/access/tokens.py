"""API tokens: created once, stored hashed, revocable, with an expiry."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.access.principal import Principal
from mko.platform.db.models.access import ApiToken, Role
from mko.platform.db.models.base import utcnow
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.validation import check_text

__all__ = [
    "TOKEN_PREFIX",
    "authenticate_token",
    "check_tokens",
    "create_token",
    "list_tokens",
    "revoke_token",
    "token_hash",
]

log = logging.getLogger("mko.auth")


TOKEN_PREFIX = "mko_"  # noqa: S105 - a visible prefix, not a secret


#: How exactly a token's ``last_used_at`` follows its use.
LAST_USED_PRECISION = timedelta(minutes=1)


def token_hash(token: str) -> str:
    """How a token (or a session cookie) is stored and looked up: SHA-256, hex."""
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
        token_hash=token_hash(plain),
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
    token = session.scalars(select(ApiToken).where(ApiToken.token_hash == token_hash(plain))).first()
    if token is None:
        return None
    return check_tokens(session, [token.id]).get(token.id)


def check_tokens(session: Session, token_ids: Collection[int]) -> dict[int, Principal]:
    """The principals of those of ``token_ids`` that are valid now (not revoked, expired or deleted).

    One query, whatever the number of tokens; ``last_used_at`` is brought up to date where it lags by
    more than :data:`LAST_USED_PRECISION`.
    """
    now = utcnow()
    rows = session.execute(_TOKEN_ROWS, {"ids": list(token_ids)}).all()
    valid = {
        row.id: Principal(name=row.name, role=row.role, kind="token", user_id=row.user_id, token_id=row.id)
        for row in rows
        if row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
    }
    # Not on every request: a burst of reads would otherwise be a burst of writes on one row.
    stale = [row.id for row in rows if row.id in valid and not _used_since(row.last_used_at, now)]
    if stale:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id.in_(stale))
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    return valid


# Built once: building a statement cost more than running it (the SQL is cached on the object).
_TOKEN_ROWS = select(
    ApiToken.id,
    ApiToken.name,
    ApiToken.role,
    ApiToken.user_id,
    ApiToken.expires_at,
    ApiToken.revoked_at,
    ApiToken.last_used_at,
).where(ApiToken.id.in_(bindparam("ids", expanding=True)))


def _used_since(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is not None and now - last_used_at < LAST_USED_PRECISION


def expires_in_days(days: float | None) -> timedelta | None:
    """A token lifetime from a number of days."""
    return None if days is None else timedelta(days=days)


def is_expired(value: datetime | None) -> bool:
    """Whether a timestamp is in the past."""
    return value is not None and value <= utcnow()
