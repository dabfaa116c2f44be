"""The route class of every router (API and web pages): sessions closed in their own thread."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

__all__ = ["MkoRoute"]

T = TypeVar("T")


class MkoRoute(APIRoute):
    """Every router's ``route_class``.

    A sync route closes its request session in its own worker thread as it returns. FastAPI closes a
    dependency's session only once the route has handed its thread back and the event loop gets round
    to it; under a burst that lag let more sessions hold connections than there are worker threads,
    and the pool ran dry.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _closing_sessions(endpoint)
        super().__init__(path, endpoint, **kwargs)


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
