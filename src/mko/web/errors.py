"""The web's answers to errors: the login form, the forbidden page, and mko's error page for the rest.

Installed by ``mko.app.create_app`` after ``mko.http.errors``: for requests outside the web's pages (the
API, health, metrics) it hands over to the JSON answers, so a client always gets the format it speaks.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from mko.http.errors import error_response, internal_error_response, log_incident
from mko.platform.errors import AuthenticationError, MkoError, PermissionDeniedError
from mko.web.pages.render import templates

__all__ = ["install_error_pages", "is_page"]

# Paths served as JSON (or text) whatever the error: the API, its schema and docs, the probes.
_NOT_PAGES = ("/api", "/openapi.json", "/docs", "/metrics", "/static")


def is_page(request: Request) -> bool:
    """Whether ``request`` asked for one of the web's pages (not the API, the metrics or a file)."""
    path = request.url.path
    return not any(path == prefix or path.startswith(f"{prefix}/") for prefix in _NOT_PAGES)


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    context = {
        "title": title,
        "message": message,
        "principal": getattr(request.state, "principal", None),
    }
    return templates.TemplateResponse(request, "error.html", context, status_code=status)


def install_error_pages(app: FastAPI) -> None:
    """Register the page answers: sign-in redirect, forbidden page, error page, catch-all page."""

    @app.exception_handler(AuthenticationError)
    async def _login(request: Request, exc: AuthenticationError) -> Response:
        if not is_page(request):
            return error_response(exc)
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(back)}", status_code=303)

    @app.exception_handler(PermissionDeniedError)
    async def _forbidden(request: Request, exc: PermissionDeniedError) -> Response:
        if not is_page(request):
            return error_response(exc)
        context = {"message": str(exc), "principal": getattr(request.state, "principal", None)}
        return templates.TemplateResponse(request, "forbidden.html", context, status_code=403)

    @app.exception_handler(MkoError)
    async def _error(request: Request, exc: MkoError) -> Response:
        if not is_page(request):
            return error_response(exc)
        return _error_page(request, exc.http_status, "Something went wrong", str(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        incident = log_incident(request, exc)
        if not is_page(request):
            return internal_error_response(incident)
        message = f"mko hit an internal error (incident {incident}); the server log has the details."
        return _error_page(request, 500, "Internal error", message)
