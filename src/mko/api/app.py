"""FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from mko import __version__, wake
from mko.api.deps import SessionDep
from mko.api.errors import install_error_handlers
from mko.api.routes import inventory, operations, wol
from mko.db import make_engine, make_session_factory
from mko.settings import Settings, get_settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings``; the database must already be migrated."""
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with session_factory() as session:
            wake.mark_interrupted_operations(session)
        yield
        # Background wakes end with the server; each records itself as cancelled.
        tasks: set[asyncio.Task[Any]] = app.state.background_tasks
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(
        lifespan=lifespan,
        title="mko",
        version=__version__,
        summary="Power orchestration for MicroK8s clusters",
        description="UPS-driven graceful shutdown and verified Wake-on-LAN recovery.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.background_tasks = set()
    install_error_handlers(app)

    @app.get("/api/health", tags=["health"])
    def health(session: SessionDep) -> dict[str, str]:
        """Liveness and database reachability, for probes."""
        session.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    app.include_router(inventory.router)
    app.include_router(operations.router)
    app.include_router(wol.router)
    from fastapi.staticfiles import StaticFiles

    from mko.web import STATIC_DIR
    from mko.web import router as web_router

    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
