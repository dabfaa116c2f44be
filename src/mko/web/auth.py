"""Web sign-in: login page, session cookie, CSRF on every form, roles deciding what a page offers."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from mko.access.audit import record_auth_event
from mko.access.principal import Principal, allows
from mko.access.sessions import create_session, delete_session, session_principal
from mko.access.throttle import LoginThrottle
from mko.access.users import authenticate_password
from mko.api.routing import MkoRoute
from mko.api.security import SAFE_METHODS, SESSION_COOKIE, client_address
from mko.platform.db.models.access import Role
from mko.platform.db.session import in_thread_session

__all__ = ["DEVICE_COOKIE", "LoginRequired", "WebForbidden", "router", "web_authorize"]

DEVICE_COOKIE = "mko_device"
DEVICE_COOKIE_DAYS = 365

router = APIRouter(include_in_schema=False, route_class=MkoRoute)
T = TypeVar("T")


class LoginRequired(Exception):
    """No (live) session: the page redirects to the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class WebForbidden(Exception):
    """Signed in, but the role or the CSRF token does not allow this."""


async def web_authorize(request: Request) -> Principal:
    """Pages need a session (viewer); form posts need operator and the session's CSRF token."""
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = await _db(request, lambda s: session_principal(s, cookie)) if cookie else None
    if principal is None:
        raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    request.state.principal = principal
    if request.method in SAFE_METHODS:
        return principal
    await _check_csrf(request, principal)
    if not allows(principal.role, Role.OPERATOR):
        await _audit(request, "denied", principal.actor_name, f"POST {request.url.path} needs role operator")
        raise WebForbidden(f"your role {principal.role.value} cannot do this")
    return principal


async def _db(request: Request, work: Callable[[Session], T]) -> T:
    """Database work of these async handlers, in a worker thread with a session of its own."""
    return await in_thread_session(request.app.state.session_factory, work)


async def _audit(request: Request, kind: str, principal: str, detail: str) -> None:
    client = client_address(request)
    await _db(request, lambda s: record_auth_event(s, kind, principal, client, detail))


async def _check_csrf(request: Request, principal: Principal) -> None:
    form = await request.form()
    sent = form.get("csrf_token")
    if (
        not isinstance(sent, str)
        or not principal.csrf_token
        or not secrets.compare_digest(sent, principal.csrf_token)
    ):
        await _audit(request, "csrf_rejected", principal.actor_name, request.url.path)
        raise WebForbidden("the form was not sent from this session (CSRF check failed): reload the page")


def _safe_next(value: str | None) -> str:
    # Only local paths: an open redirect after login would hand sessions to phishing pages.
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    return value


def _login_page(
    request: Request, status_code: int = 200, error: str = "", next_path: str = "/"
) -> HTMLResponse:
    from mko.web.pages import templates

    return templates.TemplateResponse(
        request, "login.html", {"error": error, "next": next_path, "principal": None}, status_code=status_code
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    """The sign-in form."""
    return _login_page(request, next_path=_safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the password (rate-limited per client) and start a session."""
    form = await request.form()
    username = str(form.get("username") or "")
    password = str(form.get("password") or "")
    next_path = _safe_next(str(form.get("next") or "/"))
    throttle: LoginThrottle = request.app.state.login_throttle
    client = client_address(request)
    device = throttle.device_of(request.cookies.get(DEVICE_COOKIE), username)
    wait = throttle.retry_after(username, client, device)
    if wait > 0:
        await _audit(request, "login_throttled", username, "too many failed logins")
        return _login_page(
            request, 429, f"Too many failed attempts: try again in {int(wait) + 1} s.", next_path
        )
    settings = request.app.state.settings
    lifetime = timedelta(minutes=settings.session_minutes)

    def sign_in(session: Session) -> tuple[str, str] | None:
        # argon2 takes tens of milliseconds of CPU by design: in the worker thread, off the event loop.
        user = authenticate_password(session, username, password)
        if user is None:
            return None
        _, cookie = create_session(session, user, lifetime)
        return user.username, cookie

    signed_in = await _db(request, sign_in)
    if signed_in is None:
        throttle.failed(username, client, device)
        await _audit(request, "login_failed", username, "wrong user name or password")
        return _login_page(request, 401, "Wrong user name or password.", next_path)
    throttle.succeeded(username, device)
    user_name, cookie = signed_in
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=settings.session_minutes * 60,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    # This browser has signed in as this user: the login throttle will not lock it out (LoginThrottle).
    response.set_cookie(
        DEVICE_COOKIE,
        device or throttle.device_cookie(user_name),
        max_age=DEVICE_COOKIE_DAYS * 86400,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/login",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (CSRF-checked like every form)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = await _db(request, lambda s: session_principal(s, cookie)) if cookie else None
    if cookie and principal is not None:
        await _check_csrf(request, principal)
        await _db(request, lambda s: delete_session(s, cookie))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def login_redirect(exc: LoginRequired) -> RedirectResponse:
    """Where an anonymous page request goes."""
    return RedirectResponse(f"/login?next={quote(exc.next_path)}", status_code=303)
