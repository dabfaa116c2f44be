"""The web's answers to the errors of a signed-out or refused visitor: the login form, the forbidden page."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from mko.http.security import LoginRequired, WebForbidden
from mko.web.login import login_redirect
from mko.web.pages.render import templates

__all__ = ["install_error_pages"]


def install_error_pages(app: FastAPI) -> None:
    """Register the pages for LoginRequired (redirect to the login form) and WebForbidden (403)."""

    @app.exception_handler(LoginRequired)
    async def _login(_: Request, exc: LoginRequired) -> Response:
        return login_redirect(exc)

    @app.exception_handler(WebForbidden)
    async def _forbidden(request: Request, exc: WebForbidden) -> Response:
        context = {"message": str(exc), "principal": getattr(request.state, "principal", None)}
        return templates.TemplateResponse(request, "forbidden.html", context, status_code=403)
