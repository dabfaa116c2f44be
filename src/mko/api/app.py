"""FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import text

from mko import __version__
from mko.api.deps import SessionDep
from mko.api.errors import install_error_handlers
from mko.api.routes import inventory, operations
from mko.db import make_engine, make_session_factory
from mko.settings import Settings, get_settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings``; the database must already be migrated."""
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)
    app = FastAPI(
        title="mko",
        version=__version__,
        summary="Power orchestration for MicroK8s clusters",
        description="UPS-driven graceful shutdown and verified Wake-on-LAN recovery.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    install_error_handlers(app)

    @app.get("/api/health", tags=["health"])
    def health(session: SessionDep) -> dict[str, str]:
        """Liveness and database reachability, for probes."""
        session.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    app.include_router(inventory.router)
    app.include_router(operations.router)
    from mko.web import router as web_router

    app.include_router(web_router)
    return app
