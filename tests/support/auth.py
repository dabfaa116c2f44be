"""Credentials for tests that build their own app (e.g. inside a lab namespace)."""

from __future__ import annotations

import secrets

from mko.access.tokens import create_token
from mko.platform.db.models.access import Role
from mko.platform.db.session import make_engine, make_session_factory

__all__ = ["admin_headers"]


def admin_headers(database_url: str) -> dict[str, str]:
    """An Authorization header with a fresh admin token in the database at ``database_url``."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            _, token = create_token(session, f"test-{secrets.token_hex(4)}", Role.ADMIN)
    finally:
        engine.dispose()
    return {"Authorization": f"Bearer {token}"}
