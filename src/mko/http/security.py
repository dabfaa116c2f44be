"""Who may call what: bearer tokens or the web session, roles per route, 401 vs 403, CSRF for cookies."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from mko.access.audit import record_auth_event
from mko.access.principal import Principal, allows
from mko.access.sessions import session_principal
from mko.http.credentials import TokenCache
from mko.platform.db.models.access import Role
from mko.platform.db.session import in_thread_session
from mko.platform.errors import AuthenticationError, PermissionDeniedError

__all__ = [
    "SESSION_COOKIE",
    "AdminDep",
    "PrincipalDep",
    "authorize_by_method",
    "current_principal",
    "require",
    "web_authorize",
]

SESSION_COOKIE = "mko_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_address(request: Request) -> str:
    """The caller's address, for the audit log."""
    return request.client.host if request.client else ""


def _unauthenticated(detail: str) -> AuthenticationError:
    return AuthenticationError(detail)  # 401 with WWW-Authenticate: Bearer (mko.http.errors)


def _session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


async def current_principal(request: Request) -> Principal:
    """The caller from ``Authorization: Bearer …`` or the session cookie; 401 without valid credentials.

    A bearer token is checked through the app's :class:`mko.http.credentials.TokenCache` (revocation
    honoured at once); a cookie with a session of its own in a worker thread, closed before the route
    runs, so a request waiting for its route's thread holds no database connection.
    """
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    principal = await _authenticate(request)
    request.state.principal = principal
    return principal


async def _authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _unauthenticated("use Authorization: Bearer <token>")
        tokens: TokenCache = request.app.state.token_cache
        found = await tokens.authenticate(credentials.strip())
        if found is None:
            await _audit(request, "token_invalid", "", request.url.path)
            raise _unauthenticated("invalid, expired or revoked token")
        return found
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise _unauthenticated("authentication required")
    principal = await _db(request, lambda session: session_principal(session, cookie))
    if principal is None:
        raise _unauthenticated("session expired: log in again")
    if request.method not in SAFE_METHODS and request.url.path.startswith("/api/"):
        sent = request.headers.get(CSRF_HEADER, "")
        if not principal.csrf_token or not secrets.compare_digest(sent, principal.csrf_token):
            raise PermissionDeniedError("missing or wrong X-CSRF-Token header")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def caller_is_admin(principal: PrincipalDep) -> bool:
    """Whether the caller has the admin role (who may, e.g., move a stored secret without giving it)."""
    return principal.role == Role.ADMIN


AdminDep = Annotated[bool, Depends(caller_is_admin)]


async def _deny(
    request: Request, principal: Principal, required: Role, why: str = ""
) -> PermissionDeniedError:
    detail = f"{request.method} {request.url.path} needs role {required.value}{why}"
    client, settings = client_address(request), request.app.state.settings
    await in_thread_session(
        _session_factory(request),
        lambda session: record_auth_event(session, settings, "denied", principal.actor_name, client, detail),
    )
    return PermissionDeniedError(f"your role {principal.role.value} cannot do this: {detail}")


def require(required: Role) -> Any:
    """A dependency admitting callers whose role includes ``required``."""

    async def check(request: Request, principal: PrincipalDep) -> Principal:
        if not allows(principal.role, required):
            raise await _deny(request, principal, required)
        return principal

    check.required_role = required  # type: ignore[attr-defined]  # read by the route-table test
    return check


async def authorize_by_method(request: Request, principal: PrincipalDep) -> Principal:
    """Reads need ``viewer``; anything that changes state needs ``operator``."""
    required = Role.VIEWER if request.method in SAFE_METHODS else Role.OPERATOR
    if not allows(principal.role, required):
        raise await _deny(request, principal, required)
    return principal


async def require_operator_for(request: Request, principal: Principal, what: str) -> None:
    """403 unless the caller may operate: for reads that would make mko connect out (``what``)."""
    if not allows(principal.role, Role.OPERATOR):
        why = f" ({what} makes mko connect out)"
        raise await _deny(request, principal, Role.OPERATOR, why)


authorize_by_method.required_role = "by-method"  # type: ignore[attr-defined]


T = TypeVar("T")


async def web_authorize(request: Request) -> Principal:
    """Pages need a session (viewer); form posts need operator and the session's CSRF token."""
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = await _db(request, lambda s: session_principal(s, cookie)) if cookie else None
    if principal is None:
        raise AuthenticationError("sign in to see this page")  # mko.web.errors redirects to the form
    request.state.principal = principal
    if request.method in SAFE_METHODS:
        return principal
    await _check_csrf(request, principal)
    if not allows(principal.role, Role.OPERATOR):
        await _audit(request, "denied", principal.actor_name, f"POST {request.url.path} needs role operator")
        raise PermissionDeniedError(f"your role {principal.role.value} cannot do this")
    return principal


async def _db(request: Request, work: Callable[[Session], T]) -> T:
    """Database work of these async handlers, in a worker thread with a session of its own."""
    return await in_thread_session(request.app.state.session_factory, work)


async def _audit(request: Request, kind: str, principal: str, detail: str) -> None:
    client = client_address(request)
    settings = request.app.state.settings
    await _db(request, lambda s: record_auth_event(s, settings, kind, principal, client, detail))


async def _check_csrf(request: Request, principal: Principal) -> None:
    form = await request.form()
    sent = form.get("csrf_token")
    if (
        not isinstance(sent, str)
        or not principal.csrf_token
        or not secrets.compare_digest(sent, principal.csrf_token)
    ):
        await _audit(request, "csrf_rejected", principal.actor_name, request.url.path)
        raise PermissionDeniedError(
            "the form was not sent from this session (CSRF check failed): reload the page"
        )
