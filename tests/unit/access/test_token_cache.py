"""Bearer tokens are cached, and still refused on the very next request once revoked, expired or deleted.

The cache (mko.http.credentials.TokenCache) keeps tokens that were found; every use waits for a check
of the database that started after the request arrived. These tests revoke a token in every way a
user can (the API, the CLI, deleting its user, its expiry) and send the next request at once; and
they hold a check open to show that a request arriving after a revocation never takes the answer of
a check that read the database before it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.access.tokens import create_token, revoke_token
from mko.access.users import create_user, remove_user
from mko.cli.root import app as cli_app
from mko.http.credentials import TokenCache
from mko.platform.db.models.access import ApiToken, AuthEvent, Role
from mko.platform.db.models.base import utcnow
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _me(client: TestClient, plain: str) -> int:
    return client.get("/api/me", headers={"Authorization": f"Bearer {plain}"}).status_code


def test_a_token_revoked_over_the_api_is_refused_on_the_next_request(
    client: TestClient, session: Session
) -> None:
    _, plain = create_token(session, "grafana", Role.VIEWER)
    assert _me(client, plain) == 200
    assert _me(client, plain) == 200  # now served from the cache
    assert client.delete("/api/tokens/grafana").status_code == 204  # the admin token revokes it
    assert _me(client, plain) == 401


def test_a_token_revoked_by_the_cli_is_refused_on_the_next_request(
    client: TestClient, session: Session, cli: CliRunner
) -> None:
    """The CLI writes through its own engine, as ``mko token revoke`` in another process does."""
    _, plain = create_token(session, "grafana", Role.VIEWER)
    assert _me(client, plain) == 200
    assert cli.invoke(cli_app, ["token", "revoke", "grafana"]).exit_code == 0
    assert _me(client, plain) == 401


def test_a_token_of_a_deleted_user_or_past_its_expiry_is_refused_on_the_next_request(
    client: TestClient, session: Session, settings: Settings
) -> None:
    user = create_user(session, settings, "ada", "a-long-password", Role.OPERATOR)
    _, of_user = create_token(session, "ada-laptop", Role.OPERATOR, user_id=user.id)
    _, expiring = create_token(session, "short", Role.VIEWER, expires_in=timedelta(minutes=5))
    assert _me(client, of_user) == 200 and _me(client, expiring) == 200
    remove_user(session, "ada")  # its tokens go with it (ON DELETE CASCADE)
    row = session.query(ApiToken).filter_by(name="short").one()
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    assert _me(client, of_user) == 401
    assert _me(client, expiring) == 401


def test_a_refused_token_is_recorded_and_a_new_one_works_at_once(
    client: TestClient, session: Session
) -> None:
    _, plain = create_token(session, "grafana", Role.VIEWER)
    assert _me(client, plain) == 200
    revoke_token(session, "grafana")
    assert _me(client, plain) == 401
    assert [e.kind for e in session.scalars(select(AuthEvent))] == ["token_invalid"]
    _, fresh = create_token(session, "grafana-2", Role.VIEWER)
    assert _me(client, fresh) == 200


class _HeldCheck:
    """Holds the cache's check query after it has read the tokens, until released (a real database)."""

    def __init__(self, settings: Settings) -> None:
        self.engine = make_engine(settings.database_url)
        self.factory = make_session_factory(self.engine)
        self.hold = False
        self.reached = threading.Event()
        self.release = threading.Event()
        event.listen(self.engine, "after_cursor_execute", self._after)

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.hold and statement.lstrip().upper().startswith("SELECT") and "api_tokens" in statement:
            self.hold = False
            self.reached.set()
            self.release.wait(timeout=30)


@pytest.fixture
def held(settings: Settings, session: Session) -> Iterator[_HeldCheck]:
    check = _HeldCheck(settings)
    yield check
    check.release.set()
    check.engine.dispose()


async def test_a_request_after_a_revocation_never_takes_a_check_that_read_before_it(
    held: _HeldCheck, session: Session
) -> None:
    _, plain = create_token(session, "grafana", Role.VIEWER)
    cache = TokenCache(held.factory)
    assert await cache.authenticate(plain) is not None  # looked up and cached
    before = cache.checks
    held.hold = True
    early = asyncio.create_task(cache.authenticate(plain))  # its check reads the token, then is held
    assert await asyncio.to_thread(held.reached.wait, 30)
    revoke_token(session, "grafana")
    late = [asyncio.create_task(cache.authenticate(plain)) for _ in range(5)]  # arrive after the revoke
    await asyncio.sleep(0)
    held.release.set()
    assert (await early) is not None  # it arrived before the revocation
    assert await asyncio.gather(*late) == [None] * 5
    assert cache.checks - before == 2  # the five late requests shared one check


async def test_a_burst_with_one_token_costs_a_few_checks_not_one_per_request(
    held: _HeldCheck, session: Session
) -> None:
    _, plain = create_token(session, "grafana", Role.VIEWER)
    cache = TokenCache(held.factory)
    assert await cache.authenticate(plain) is not None
    before = cache.checks
    held.hold = True
    first = asyncio.create_task(cache.authenticate(plain))
    assert await asyncio.to_thread(held.reached.wait, 30)
    burst = [asyncio.create_task(cache.authenticate(plain)) for _ in range(50)]
    await asyncio.sleep(0)
    held.release.set()
    results = await asyncio.gather(first, *burst)
    assert all(principal is not None and principal.name == "grafana" for principal in results)
    assert cache.checks - before == 2
