"""Web sign-in: login page, session cookie, CSRF on every form, roles deciding what a page offers."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from mko.access.sessions import create_session, delete_session, session_principal
from mko.access.throttle import LoginThrottle
from mko.access.users import authenticate_password
from mko.http.routing import MkoRoute
from mko.http.security import SESSION_COOKIE, _audit, _check_csrf, _db, client_address

__all__ = ["DEVICE_COOKIE", "router"]


DEVICE_COOKIE = "mko_device"
DEVICE_COOKIE_DAYS = 365

router = APIRouter(include_in_schema=False, route_class=MkoRoute)


def _safe_next(value: str | None) -> str:
    # Only local paths: an open redirect after login would hand sessions to phishing pages.
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    return value


def _login_page(
    request: Request, status_code: int = 200, error: str = "", next_path: str = "/"
) -> HTMLResponse:
    from mko.web.pages.render import templates

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
        user = authenticate_password(session, settings, username, password)
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
