"""The route class of every router (API and web pages): sessions closed in their thread, strict JSON."""

from __future__ import annotations

import email.message
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from mko.http.hardening import strict_json

__all__ = ["MkoRoute"]

T = TypeVar("T")


class MkoRoute(APIRoute):
    """Every router's ``route_class``.

    - A sync route closes its request session in its own worker thread as it returns. FastAPI closes a
      dependency's session only once the route has handed its thread back and the event loop gets
      round to it; under a burst that lag let more sessions hold connections than there are worker
      threads, and the pool ran dry.
    - A JSON body is parsed strictly (:func:`mko.http.hardening.strict_json`): NaN, Infinity, a lone
      surrogate or bytes that are not UTF-8 get the same 422 as any other malformed JSON, instead of
      reaching the services (and the database, and the 422 answer itself) as Python lets them through;
      and its values must have the JSON types the schema documents (:func:`_check_json_types`).
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _closing_sessions(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, after the JSON body (if any) was parsed strictly."""
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        typed: TypeAdapter[Any] = TypeAdapter(self.body_field.field_info.annotation or Any)

        async def strict(request: Request) -> Response:
            if _is_json(request):
                body = await request.body()
                if body:
                    parsed = strict_json(body)
                    _check_json_types(typed, body)
                    # NOTE: Starlette keeps a parsed body in Request._json; FastAPI's own parse then
                    # takes this strictly parsed one instead of parsing again.
                    request._json = parsed
            return await handler(request)

        return strict


def _check_json_types(typed: TypeAdapter[Any], body: bytes) -> None:
    """422 for a value of another JSON type than the schema's, which pydantic's lax mode would convert
    (``false`` for a number, ``0`` for a boolean, ``"5"`` for an integer): pydantic's strict JSON mode,
    where enums and dates are still read from their JSON strings."""
    try:
        typed.validate_json(body, strict=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [error | {"loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def _is_json(request: Request) -> bool:
    """Whether FastAPI would parse this body as JSON (the same test as its own)."""
    value = request.headers.get("content-type")
    if not value:
        return False
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _closing_sessions(endpoint: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(endpoint)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()

    return call
