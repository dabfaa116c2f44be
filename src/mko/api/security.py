"""Who may call what: bearer tokens or the web session, roles per route, 401 vs 403, CSRF for cookies."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from mko import auth
from mko.api.deps import get_session
from mko.db.auth_models import Role

__all__ = [
    "SESSION_COOKIE",
    "AdminDep",
    "PrincipalDep",
    "authorize_by_method",
    "current_principal",
    "require",
]

SESSION_COOKIE = "mko_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_address(request: Request) -> str:
    """The caller's address, for the audit log."""
    return request.client.host if request.client else ""


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request, session: Annotated[Session, Depends(get_session)]) -> auth.Principal:
    """The caller from ``Authorization: Bearer …`` or the session cookie; 401 without valid credentials."""
    cached: auth.Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization", "")
    principal: auth.Principal | None = None
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _unauthenticated("use Authorization: Bearer <token>")
        principal = auth.authenticate_token(session, credentials.strip())
        if principal is None:
            auth.record_auth_event(session, "token_invalid", "", client_address(request), request.url.path)
            raise _unauthenticated("invalid, expired or revoked token")
    elif (cookie := request.cookies.get(SESSION_COOKIE)) is not None:
        principal = auth.session_principal(session, cookie)
        if principal is None:
            raise _unauthenticated("session expired: log in again")
        if request.method not in SAFE_METHODS and request.url.path.startswith("/api/"):
            sent = request.headers.get(CSRF_HEADER, "")
            if not principal.csrf_token or not secrets.compare_digest(sent, principal.csrf_token):
                raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-CSRF-Token header")
    else:
        raise _unauthenticated("authentication required")
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[auth.Principal, Depends(current_principal)]


def caller_is_admin(principal: PrincipalDep) -> bool:
    """Whether the caller has the admin role (who may, e.g., move a stored secret without giving it)."""
    return principal.role == Role.ADMIN


AdminDep = Annotated[bool, Depends(caller_is_admin)]


def _deny(request: Request, session: Session, principal: auth.Principal, required: Role) -> HTTPException:
    detail = f"{request.method} {request.url.path} needs role {required.value}"
    auth.record_auth_event(session, "denied", principal.actor_name, client_address(request), detail)
    return HTTPException(
        status.HTTP_403_FORBIDDEN, f"your role {principal.role.value} cannot do this: {detail}"
    )


def require(required: Role) -> Any:
    """A dependency admitting callers whose role includes ``required``."""

    def check(
        request: Request, principal: PrincipalDep, session: Annotated[Session, Depends(get_session)]
    ) -> auth.Principal:
        if not auth.allows(principal.role, required):
            raise _deny(request, session, principal, required)
        return principal

    check.required_role = required  # type: ignore[attr-defined]  # read by the route-table test
    return check


def authorize_by_method(
    request: Request, principal: PrincipalDep, session: Annotated[Session, Depends(get_session)]
) -> auth.Principal:
    """Reads need ``viewer``; anything that changes state needs ``operator``."""
    required = Role.VIEWER if request.method in SAFE_METHODS else Role.OPERATOR
    if not auth.allows(principal.role, required):
        raise _deny(request, session, principal, required)
    return principal


authorize_by_method.required_role = "by-method"  # type: ignore[attr-defined]
