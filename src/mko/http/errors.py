"""Translate mko's error tree into JSON responses: one handler for the whole tree, one catch-all.

Every class of ``mko.platform.errors`` carries its HTTP status, so one handler serves every branch;
anything else is a bug, answered 500 with an incident id the server log repeats beside the traceback
(never a traceback, never a secret, never Starlette's plain-text page).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from mko.platform.errors import AuthenticationError, InputError, MkoError, UnavailableError

__all__ = [
    "ERROR_RESPONSES",
    "RETRY_AFTER_SECONDS",
    "error_response",
    "install_error_handlers",
    "internal_error_response",
    "log_incident",
]

log = logging.getLogger("mko.api")

# What a 503 tells clients to wait before asking again (upsd or the lab daemon did not answer).
RETRY_AFTER_SECONDS = 5


class ErrorDetail(BaseModel):
    """An error in words."""

    detail: str


# Documented on every operation, so clients (and the schema fuzzer) know every answer they can get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "no, invalid, expired or revoked credentials"},
    403: {"model": ErrorDetail, "description": "the caller's role does not allow this"},
    404: {"model": ErrorDetail, "description": "an id that does not exist"},
    409: {"model": ErrorDetail, "description": "a duplicate, or the current state forbids it"},
    413: {"model": ErrorDetail, "description": "the request body is larger than MKO_MAX_REQUEST_BYTES"},
    502: {"model": ErrorDetail, "description": "a power action or a device failed"},
    503: {
        "model": ErrorDetail,
        "description": "a peer mko needs (upsd, the lab) does not answer: retry later",
    },
}


def error_response(exc: MkoError) -> JSONResponse:
    """The JSON answer for one error of the tree: its branch's status, its message."""
    if isinstance(exc, InputError):
        # Same shape as FastAPI's own 422, so clients parse one format.
        detail = [{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]
        return JSONResponse(status_code=exc.http_status, content={"detail": detail})
    headers = {}
    if isinstance(exc, UnavailableError):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(status_code=exc.http_status, content={"detail": str(exc)}, headers=headers)


def log_incident(request: Request, exc: BaseException) -> str:
    """Log an unexpected exception with its traceback under a new incident id; return the id."""
    incident = uuid.uuid4().hex[:12]
    log.error(
        "incident %s: %s %s failed: %s",
        incident,
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return incident


def internal_error_response(incident: str) -> JSONResponse:
    """The catch-all's answer: the incident id to quote, nothing of the exception itself."""
    detail = f"internal error (incident {incident}); see the server log"
    return JSONResponse(status_code=500, content={"detail": detail})


def install_error_handlers(app: FastAPI) -> None:
    """Register the tree's handler, the out-of-range id handler and the catch-all."""

    @app.exception_handler(MkoError)
    async def _mko(_: Request, exc: MkoError) -> Response:
        return error_response(exc)

    @app.exception_handler(OverflowError)
    async def _overflow(_: Request, exc: OverflowError) -> JSONResponse:
        # An id beyond the database's 64-bit integers cannot exist (the driver refuses to bind it).
        return JSONResponse(status_code=404, content={"detail": "no such id (out of range)"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        return internal_error_response(log_incident(request, exc))
