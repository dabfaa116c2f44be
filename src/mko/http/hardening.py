"""HTTP hardening of every response: security headers, strict JSON, 422s that always render, ``Allow``.

The body size limit itself is FastAPI's (``max_body_size``, set from ``MKO_MAX_REQUEST_BYTES``); the
route class that parses JSON strictly is :class:`mko.http.routing.MkoRoute`. docs/security.md explains
each choice.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DeclaredSizeLimit", "SecurityHeaders", "install_http_handlers", "renderable", "strict_json"]

# The web UI loads its script and styles from /static only: no inline script, no inline style, no
# framing. The API docs page loads Swagger UI from /docs-assets: the files the fastapi-offline package
# ships, served by mko itself, so /docs works on a machine without internet and under the same policy.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_ASSETS = "/docs-assets"


# NOTE: ReDoc's bundle (fastapi-offline 1.7.7, ReDoc 2.x) inserts perfect-scrollbar's stylesheet as it
# loads, before any nonce can reach it (an empty element first, then its text); the policy of /redoc
# allows those two texts by their hashes. A bundle whose stylesheet differs is refused by the browser,
# and tests/e2e/test_web_look.py says so.
REDOC_SCROLLBAR_STYLE = (
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc=' "
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
)


def redoc_policy(nonce: str) -> str:
    """The policy of /redoc alone: the pages' own, but the ``<style>`` elements ReDoc writes apply when
    they carry this response's nonce, and its search index runs in a worker it builds from a blob.
    Scripts stay ``'self'`` only; docs/security.md says why."""
    styles = f"style-src 'self' 'nonce-{nonce}' {REDOC_SCROLLBAR_STYLE}; worker-src 'self' blob:"
    return CONTENT_SECURITY_POLICY.replace("style-src 'self'", styles)


SECURITY_HEADERS = {
    b"content-security-policy": CONTENT_SECURITY_POLICY.encode(),
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cross-origin-opener-policy": b"same-origin",
}
# A value shown back in a 422 is cut to this size; a longer one (or one JSON cannot carry) is left out.
ECHO_LIMIT = 200


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response (API, pages, static files, errors) that
    does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in SECURITY_HEADERS.items() if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DeclaredSizeLimit:
    """413 at once, in mko's error form (``{"detail": …}``), for a request that declares a body larger
    than ``limit``; FastAPI's own limit, further in, counts what actually arrives (chunked bodies)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope.get("headers", ())).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.limit:
                detail = f"the request body is larger than {self.limit} bytes (MKO_MAX_REQUEST_BYTES)"
                response = JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ----------------------------------------------------------------------------- strict JSON


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_strings(value: Any) -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise _NotJson("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def strict_json(body: bytes) -> Any:
    """Parse a request body as JSON (RFC 8259): UTF-8, no NaN/Infinity, no lone surrogates.

    RequestValidationError (422, ``json_invalid``) otherwise, as for any other malformed JSON.
    """
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        _check_strings(value)
    except UnicodeDecodeError as exc:
        raise _json_invalid(exc.start, "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _json_invalid(exc.pos, exc.msg) from None
    except (_NotJson, RecursionError) as exc:
        raise _json_invalid(0, str(exc) or "nested too deeply") from None
    return value


def _json_invalid(position: int, reason: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", position),
                "msg": "JSON decode error",
                "ctx": {"error": reason},
            }
        ]
    )


# ----------------------------------------------------------------------------- error answers


def renderable(value: Any) -> bool:
    """Whether ``value`` can be shown back in a JSON answer: valid JSON, UTF-8, and short."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError):  # NaN, a lone surrogate, an object JSON cannot carry
        return False
    return len(text) <= ECHO_LIMIT


def _validation_detail(errors: Iterable[Any]) -> list[dict[str, Any]]:
    detail = []
    for error in errors:
        item: dict[str, Any] = {
            "type": str(error.get("type", "value_error")),
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
        }
        # What was sent is shown back only when it can be: NaN or a lone surrogate made the answer
        # itself fail (a 500) before, and a megabyte of input has no place in an error message.
        if "input" in error and renderable(error["input"]):
            item["input"] = error["input"]
        ctx = {key: str(value) for key, value in (error.get("ctx") or {}).items()}
        if ctx and renderable(ctx):
            item["ctx"] = ctx
        detail.append(item)
    return detail


def install_http_handlers(app: FastAPI) -> None:
    """The 422 that always renders, ``Allow`` on every 405, and the API docs pages with their assets."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _validation_detail(exc.errors())})

    allowed = _AllowedMethods(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path only.
            methods = allowed.of(request.url.path)
            exc = StarletteHTTPException(405, exc.detail, headers={"Allow": ", ".join(methods)})
        return await http_exception_handler(request, exc)

    @app.get("/docs", include_in_schema=False)
    def docs_page() -> HTMLResponse:
        """Swagger UI for /openapi.json; its start-up script is /static/docs.js, not inline, and
        /static/docs-theme.js turns on Swagger UI's own dark stylesheet where the web UI is dark."""
        page = (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>mko API</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">'
            '<script src="/static/docs-theme.js"></script></head>'
            f'<body><div id="swagger-ui"></div><script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>'
            '<script src="/static/docs.js"></script></body></html>'
        )
        return HTMLResponse(page)

    @app.get("/redoc", include_in_schema=False)
    def redoc_page() -> HTMLResponse:
        """ReDoc for /openapi.json, started by /static/redoc.js with this response's style nonce (and,
        where the web UI is dark, a dark theme: /static/docs-theme.js, /static/api-docs.css)."""
        # NOTE: ReDoc (styled-components) writes its CSS into <style> elements as it renders; a fresh
        # nonce per response lets exactly those apply. The script reads it from its own tag's nonce
        # property (browsers hide the attribute from the DOM and CSS, so markup cannot copy it).
        nonce = secrets.token_urlsafe(18)
        page = (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>mko API</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="stylesheet" href="/static/api-docs.css">'
            '<script src="/static/docs-theme.js"></script></head>'
            f'<body><div id="redoc"></div><script src="{DOCS_ASSETS}/redoc.standalone.js"></script>'
            f'<script src="/static/redoc.js" nonce="{nonce}"></script></body></html>'
        )
        return HTMLResponse(page, headers={"Content-Security-Policy": redoc_policy(nonce)})

    # Swagger UI's and ReDoc's files, from the package that ships them (never a CDN).
    from importlib.resources import files

    from fastapi.staticfiles import StaticFiles

    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")


class _AllowedMethods:
    """Every method some route accepts at a path (for ``Allow``), from the app's route table."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._table: list[tuple[re.Pattern[str], set[str]]] | None = None

    def of(self, path: str) -> list[str]:
        """The methods of ``path``, sorted; HEAD wherever GET is."""
        if self._table is None:
            self._table = []
            for context in iter_route_contexts(self.app.routes):
                methods = getattr(context.original_route, "methods", None)
                if context.path and methods:
                    self._table.append((compile_path(context.path)[0], set(methods)))
        found = set().union(*(methods for regex, methods in self._table if regex.match(path)))
        if "GET" in found:
            found.add("HEAD")
        return sorted(found)
