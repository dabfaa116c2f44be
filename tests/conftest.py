"""Fixtures shared by every test: a fresh migrated database, the API app, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.api import create_app
from mko.db import make_engine, make_session_factory
from mko.db.migrate import upgrade
from mko.settings import Settings, get_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at a database and log directory of this test only (also for the CLI)."""
    monkeypatch.setenv("MKO_DATABASE_URL", f"sqlite:///{tmp_path / 'mko.db'}")
    monkeypatch.setenv("MKO_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MKO_CONFIG", str(tmp_path / "absent.toml"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    """A session on a freshly migrated database."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def client(settings: Settings, session: Session) -> Iterator[TestClient]:
    """The real app over HTTP (in-process transport)."""
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def cli() -> CliRunner:
    """Runs the real Typer app; stdout and stderr kept apart."""
    return CliRunner()
