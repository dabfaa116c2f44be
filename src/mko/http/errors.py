"""Translate mko's error tree into HTTP responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mko.platform.errors import ConflictError, InputError, NotFoundError, PowerError, UnsupportedActionError

__all__ = ["ERROR_RESPONSES", "install_error_handlers"]


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
}


def install_error_handlers(app: FastAPI) -> None:
    """Register one handler per branch of the error tree."""

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        # Same shape as FastAPI's own 422, so clients parse one format.
        detail = [{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(OverflowError)
    async def _overflow(_: Request, exc: OverflowError) -> JSONResponse:
        # An id beyond the database's 64-bit integers cannot exist (the driver refuses to bind it).
        return JSONResponse(status_code=404, content={"detail": "no such id (out of range)"})

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(UnsupportedActionError)
    async def _unsupported(_: Request, exc: UnsupportedActionError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(PowerError)
    async def _power(_: Request, exc: PowerError) -> JSONResponse:
        return JSONResponse(status_code=502, content={"detail": str(exc)})
