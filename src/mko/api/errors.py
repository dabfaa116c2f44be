"""Translate mko's error tree into HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mko.errors import ConflictError, InputError, NotFoundError, PowerError, UnsupportedActionError

__all__ = ["install_error_handlers"]


def install_error_handlers(app: FastAPI) -> None:
    """Register one handler per branch of the error tree."""

    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        # Same shape as FastAPI's own 422, so clients parse one format.
        detail = [{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]
        return JSONResponse(status_code=422, content={"detail": detail})

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
