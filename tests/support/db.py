"""Database and adapter fixtures: settings of one test, a migrated database, the API, the web UI, the CLI.

``settings``     Settings pointing at a database, log directory, SSH trust and Ansible files of this test
                 only (also exported as ``MKO_*`` for the CLI and for subprocesses).
``session``      a session on a freshly migrated database: a copy of one migrated once per test process
                 (migrating anew takes ~1 s), so each xdist worker migrates once.
``admin_token``  a bearer token with the admin role.
``client``       the real app over HTTP (in-process transport), calling the API as an admin token.
``web``          the web UI signed in as an operator (``web-op``, password ``operator-pw``).
``cli``          runs the real Typer app; stdout and stderr kept apart.
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.access.tokens import create_token
from mko.access.users import create_user
from mko.app import create_app
from mko.platform.db.models.access import Role
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade
from mko.platform.settings import Settings, get_settings
from mko.wiring import wire

__all__ = ["WebClient", "copy_migrated_database"]


@cache
def _template() -> Path:
    directory = tempfile.mkdtemp(prefix="mko-test-template-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = Path(directory) / "mko.platform.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


def copy_migrated_database(database_url: str) -> None:
    """Put a database already at head where ``database_url`` points."""
    target = Path(str(make_url(database_url).database))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template(), target)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at a database and log directory of this test only (also for the CLI)."""
    monkeypatch.setenv("MKO_DATABASE_URL", f"sqlite:///{tmp_path / 'mko.platform.db'}")
    monkeypatch.setenv("MKO_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MKO_CONFIG", str(tmp_path / "absent.toml"))
    # SSH trust and Ansible files of this test only, never the repository's data/ or ansible/.
    monkeypatch.setenv("MKO_SSH_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    monkeypatch.setenv(
        "MKO_ANSIBLE_INVENTORY_PATH", str(tmp_path / "ansible/inventory/dynamic_inventory.ini")
    )
    monkeypatch.setenv("MKO_ANSIBLE_FACTS_DIR", str(tmp_path / "ansible/facts"))
    # No background probes of the made-up node addresses tests use (tests that want them opt in).
    monkeypatch.setenv("MKO_REACHABILITY_INTERVAL", "0")
    # Tests drive the scheduler with their own clock instead of the server's loop.
    monkeypatch.setenv("MKO_SCHEDULER_ENABLED", "false")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    """A session on a freshly migrated database (a copy of one migrated once per test run)."""
    copy_migrated_database(settings.database_url)
    wiring = wire(settings)  # the same session hooks as the server and the CLI
    with wiring.session_factory() as session:
        yield session
    wiring.close()


@pytest.fixture
def admin_token(session: Session) -> str:
    """A bearer token with the admin role."""
    _, plain = create_token(session, "test-admin", Role.ADMIN)
    return plain


@pytest.fixture
def client(settings: Settings, session: Session, admin_token: str) -> Iterator[TestClient]:
    """The real app over HTTP (in-process transport), calling the API as an admin token."""
    app = create_app(settings)
    with TestClient(app, headers={"Authorization": f"Bearer {admin_token}"}) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def operator(settings: Settings, session: Session) -> Iterator[TestClient]:
    """The API called with an operator token (may change nodes and hosts, not read or move secrets)."""
    _, token = create_token(session, "op", Role.OPERATOR)
    app = create_app(settings)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as test_client:
        yield test_client
    app.state.engine.dispose()


class WebClient(TestClient):
    """A browser-like client signed in to the web UI; form posts carry the session's CSRF token."""

    csrf_token = ""

    def sign_in(self, username: str, password: str) -> None:
        """Log in through the login form and remember the CSRF token of the new session."""
        response = self.post("/login", data={"username": username, "password": password, "next": "/"})
        assert response.status_code == 200, response.text
        match = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        assert match, "no CSRF token on the page after signing in"
        self.csrf_token = match.group(1)

    def form(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """POST a form the way the page would, with the CSRF token."""
        return self.post(url, data={"csrf_token": self.csrf_token, **(data or {})}, **kwargs)


@pytest.fixture
def web(settings: Settings, session: Session) -> Iterator[WebClient]:
    """The web UI signed in as an operator (``web-op``, password ``operator-pw``)."""
    create_user(session, settings, "web-op", "operator-pw", Role.OPERATOR)
    app = create_app(settings)
    with WebClient(app) as web_client:
        web_client.sign_in("web-op", "operator-pw")
        yield web_client
    app.state.engine.dispose()


@pytest.fixture
def cli() -> CliRunner:
    """Runs the real Typer app; stdout and stderr kept apart."""
    return CliRunner()
