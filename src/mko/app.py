"""FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mko import __version__
from mko.access.throttle import LoginThrottle
from mko.api.routes import (
    access,
    cluster,
    discovery,
    ha,
    inventory,
    metrics,
    nic,
    notify,
    operations,
    power,
    proxmox,
    schedules,
    ups,
    wol,
)
from mko.api.routes import agents as agent_routes
from mko.api.routes.health import DatabaseHealth
from mko.api.routes.health import router as health_router
from mko.http import leader
from mko.http.credentials import TokenCache
from mko.http.errors import ERROR_RESPONSES, install_error_handlers
from mko.http.hardening import DeclaredSizeLimit, SecurityHeaders, install_http_handlers
from mko.http.live import LiveReads
from mko.http.routing import MkoRoute
from mko.http.security import authorize_by_method, require, web_authorize
from mko.platform.db.models.access import Role
from mko.platform.db.session import make_loop_read_engine, make_read_session_factory
from mko.platform.settings import Settings, get_settings
from mko.wiring import wire

if TYPE_CHECKING:
    from mko.lab.control import LabControl

__all__ = ["create_app"]

log = logging.getLogger("mko.api")


class _App(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outermost: every response gets the security headers, the 413s and 500s FastAPI makes itself
        # included; a body declared too large is refused before anything reads it.
        limit = self.state.settings.max_request_bytes
        return SecurityHeaders(DeclaredSizeLimit(super().build_middleware_stack(), limit))


def create_app(settings: Settings | None = None, *, lab: LabControl | None = None) -> FastAPI:
    """Build the app for ``settings``; the database must already be migrated.

    ``lab``: the virtual lab this server watches (``mko serve --lab``), adding its page and controls.
    """
    settings = settings or get_settings()
    wiring = wire(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync routes and database work run on AnyIO's worker threads; the pool keeps one connection per
        # thread (mko.platform.db.session), so the two numbers are one setting.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        # Registers this instance; the leader (with SQLite: this one) runs the UPS monitor, the rule
        # engine and the scheduler (mko.ha.duties).
        await leader.start(app)
        yield
        await leader.stop(app)
        # Background wakes end with the server; each records itself as cancelled.
        tasks: set[asyncio.Task[Any]] = app.state.background_tasks
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        app.state.database_health.close()
        if app.state.loop_read_engine is not None:
            app.state.loop_read_engine.dispose()  # in the loop's thread, whose connection it is

    app = _App(
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # 413 beyond this, JSON and forms alike (FastAPI's own limit, counted as the body arrives).
        max_body_size=settings.max_request_bytes,
        docs_url=None,  # mko.http.hardening serves /docs without inline script
        redoc_url=None,
        title="mko",
        version=__version__,
        summary="Power orchestration for MicroK8s clusters",
        description="UPS-driven graceful shutdown and verified Wake-on-LAN recovery.",
    )
    app.router.route_class = MkoRoute  # the app's own routes too (/docs)
    app.state.settings = settings
    app.state.wiring = wiring
    app.state.engine = wiring.engine
    app.state.session_factory = wiring.session_factory
    app.state.read_session_factory = make_read_session_factory(wiring.engine)
    # Lookups by key on the event loop itself, where that cannot stall it (SQLite): mko.http.deps.Db.
    loop_reads = app.state.loop_read_engine = make_loop_read_engine(settings.database_url)
    app.state.loop_read_factory = None if loop_reads is None else make_read_session_factory(loop_reads)
    app.state.background_tasks = set()
    app.state.lab = lab
    app.state.login_throttle = _login_throttle(settings)
    app.state.database_health = DatabaseHealth(settings.database_url)
    app.state.token_cache = TokenCache(wiring.session_factory)
    app.state.live_reads = LiveReads[Any](settings.live_read_interval)
    leader.install(app, wiring)
    install_error_handlers(app)
    install_http_handlers(app)

    app.include_router(health_router)  # open: probes carry no credentials
    # Every /api route needs a token or a web session: reads need viewer, changes operator, and users
    # and tokens admin (tests/unit/access/test_auth.py walks the OpenAPI routes to hold every new one to
    # this).
    by_method = [Depends(authorize_by_method)]
    admin_only = [Depends(require(Role.ADMIN))]
    # Ids are {…:int} in every path, so a fixed path (/api/nodes/wol/collect-mac, /api/ups/monitor) can
    # never be taken for an id, whatever the order; the order only keeps the schema readable.
    for router in (
        nic.router,
        inventory.router,
        operations.router,
        wol.router,
        power.router,
        proxmox.router,
        ups.router,
        schedules.router,
        discovery.router,
        metrics.router,
        notify.router,
        cluster.router,
        ha.router,
        access.me_router,
    ):
        app.include_router(router, dependencies=by_method)
    app.include_router(access.router, dependencies=admin_only)
    # Wake agents: people read the list (viewer); heartbeat/claim/report admit agent (and admin) tokens,
    # and an agent token is refused everywhere else (mko.access.principal.allows keeps the agent role apart).
    app.include_router(agent_routes.router, dependencies=by_method)
    app.include_router(agent_routes.agent_router, dependencies=[Depends(require(Role.AGENT))])
    if lab is not None:
        from mko.api.routes import lab as lab_routes

        app.include_router(lab_routes.router, dependencies=by_method)
    _mount_web(app, lab)
    if settings.trusted_proxies:
        # Outermost, so the audit, the login throttle and operations all see the real client. Only
        # these proxies' X-Forwarded-For is believed; `mko serve` turns uvicorn's own handling off
        # (it trusts loopback by default), so this setting alone decides.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    return app


def _mount_web(app: FastAPI, lab: LabControl | None) -> None:
    """The web UI: the login pages, every page behind a web session, the static files."""
    from fastapi.staticfiles import StaticFiles

    from mko.web import errors as web_errors
    from mko.web import login
    from mko.web.pages.render import STATIC_DIR
    from mko.web.site import page_routers

    web_errors.install_error_pages(app)
    app.include_router(login.router)
    for router in page_routers(lab=lab is not None):
        app.include_router(router, dependencies=[Depends(web_authorize)])
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _login_throttle(settings: Settings) -> LoginThrottle:
    """The login throttle, its device cookies signed with a key derived from the secrets key (so they
    survive restarts and are shared by every instance of a high-availability setup)."""
    from mko.platform.errors import MkoError
    from mko.platform.secrets import SecretBox

    try:
        key = SecretBox.from_settings(settings).derive("mko login device cookie")
    except (OSError, MkoError) as exc:
        log.warning("login device cookies use a key of this process only (%s)", exc)
        key = None
    return LoginThrottle(
        settings.login_attempts,
        settings.login_window,
        free_failures=settings.login_free_failures,
        backoff_max=settings.login_backoff_max,
        key=key,
    )
