"""Log lines cannot be forged or flooded by what callers type, and auth events do not grow forever."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mko.access.audit import PRUNE_EVERY, record_auth_event
from mko.app import create_app
from mko.platform.db.models.access import AuthEvent
from mko.platform.db.models.base import utcnow
from mko.platform.logs import configure_logging
from mko.platform.settings import Settings, get_settings
from support.hostile import FORGED_RECORD, check_log

FORGED = FORGED_RECORD


@pytest.fixture
def logged(settings: Settings) -> Path:
    configure_logging(settings, console=False)
    yield settings.log_file
    for handler in logging.getLogger("mko").handlers:
        handler.close()


def test_login_names_cannot_forge_colour_or_rotate_away_the_log(
    settings: Settings, session: Session, logged: Path
) -> None:
    app = create_app(settings.model_copy(update={"login_attempts": 1000, "login_free_failures": 1000}))
    names = [
        f"evil\n{FORGED}",
        f"evil\r{FORGED}",
        "\x1b[2J\x1b[31mred\x1b]0;title\x07",
        "nul\x00byte",
        "line\u2028separator\u2029para\x85next",
        "bidi\u202eevil",
        "x" * 1_000_000,
    ]
    with TestClient(app) as browser:
        for name in names:
            response = browser.post("/login", data={"username": name, "password": "wrong"})
            assert response.status_code == 401
        # The same through the API: an unknown token and a path with a newline in it.
        bad_token = {"Authorization": "Bearer nope"}
        assert browser.delete("/api/tokens/%0A" + FORGED, headers=bad_token).status_code == 401
    app.state.engine.dispose()
    lines = check_log(logged)
    failed = [line for line in lines if "auth login_failed" in line]
    assert len(failed) == len(names)
    assert any("auth token_invalid" in line and "/api/tokens/" in line for line in lines)
    assert any("evil\\n2024-01-01" in line for line in failed)
    assert any("\\x1b[2J" in line for line in failed)
    # Seven 1 MB names once rotated the whole audit away; now each record is cut.
    assert logged.stat().st_size < 50_000
    assert any("more]" in line for line in failed)
    stored = session.scalars(select(AuthEvent.principal)).all()
    assert all(p.isprintable() and len(p) <= 120 for p in stored)


def test_exception_text_is_indented_under_its_record(logged: Path) -> None:
    log = logging.getLogger("mko.test")
    try:
        raise ValueError(f"bad value\n{FORGED}")
    except ValueError:
        log.exception("refused %s", "\x1b[31m")
    lines = check_log(logged)
    assert lines[-1].startswith("    ") and FORGED in lines[-1]


def test_auth_events_are_pruned_by_age_and_count(
    settings: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MKO_AUTH_EVENTS_KEEP_MAX", "150")
    monkeypatch.setenv("MKO_AUTH_EVENTS_KEEP_DAYS", "30")
    get_settings.cache_clear()
    settings = get_settings()
    old = AuthEvent(
        kind="denied", principal="old", source="", detail="", created_at=utcnow() - timedelta(days=31)
    )
    session.add(old)
    session.commit()
    for i in range(398):
        record_auth_event(session, settings, "login_failed", f"user{i}", "10.0.0.1", "wrong")
    count = session.scalar(select(func.count()).select_from(AuthEvent))
    assert count is not None and 150 <= count < 150 + PRUNE_EVERY
    assert session.scalar(select(func.count()).where(AuthEvent.principal == "old")) == 0
    newest = session.scalars(select(AuthEvent.principal).order_by(AuthEvent.id.desc()).limit(1)).one()
    assert newest == "user397"
