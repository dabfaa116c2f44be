"""Access control: every route's role decision, tokens, web sessions, CSRF, login limits, no secrets out."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.access.principal import allows
from mko.access.tokens import create_token, list_tokens, revoke_token
from mko.access.users import authenticate_password, create_user, ensure_first_admin, list_users
from mko.app import create_app
from mko.cli.root import app as cli_app
from mko.platform.db.models.access import AuthEvent, Role
from mko.platform.db.models.base import utcnow
from mko.platform.settings import Settings

# The routes only an admin may use; everything else: viewer reads, operator changes.
ADMIN_ONLY = re.compile(r"^/api/(users|tokens)")
# What wake agents call (heartbeat, claim, report): agent or admin tokens only; the list is for viewers.
AGENT_ONLY = re.compile(r"^/api/agents/")
OPEN = {("GET", "/api/health")}
SAMPLE_VALUES = {
    "node_id": "1",
    "cluster_id": "1",
    "ups_id": "1",
    "rule_id": "1",
    "schedule_id": "1",
    "operation_id": "1",
    "host_id": "1",
    "username": "nobody",
    "name": "nobody",
    "event_id": "1",
}


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every operation in the live OpenAPI schema, ids filled in."""
    schema = client.get("/openapi.json").json()
    found = []
    for path, operations in schema["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_VALUES.get(m.group(1), "1"), path)
        found.extend((method.upper(), concrete) for method in operations)
    return found


def _required(method: str, path: str) -> Role | None:
    if (method, path) in OPEN:
        return None
    if ADMIN_ONLY.match(path):
        return Role.ADMIN
    if AGENT_ONLY.match(path):
        return Role.AGENT
    return Role.VIEWER if method in ("GET", "HEAD") else Role.OPERATOR


@pytest.fixture
def tokens(session: Session) -> dict[Role, str]:
    return {
        role: create_token(session, f"t-{role.value}", role)[1]
        for role in (Role.VIEWER, Role.OPERATOR, Role.AGENT)
    }


def test_role_matrix_for_every_route(client: TestClient, tokens: dict[Role, str]) -> None:
    routes = _routes(client)
    assert len(routes) > 40  # the schema really lists the API
    assert {("GET", "/api/agents"), ("POST", "/api/agents/claim"), ("POST", "/api/agents/heartbeat")} <= set(
        routes
    )
    anonymous = TestClient(client.app)
    for method, path in routes:
        required = _required(method, path)
        response = anonymous.request(method, path)
        if required is None:
            assert response.status_code == 200, (method, path)
            continue
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers.get("www-authenticate") == "Bearer"
        for role, token in tokens.items():
            response = anonymous.request(method, path, headers={"Authorization": f"Bearer {token}"})
            if allows(role, required):
                assert response.status_code != 403, (role, method, path, response.text)
                assert response.status_code != 401, (role, method, path)
            else:
                assert response.status_code == 403, (role, method, path, response.status_code)


def test_agent_endpoints_admit_agent_and_admin_tokens_only(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    beat = {"name": "pi", "site": "b"}
    agent = {"Authorization": f"Bearer {tokens[Role.AGENT]}"}
    assert client.post("/api/agents/heartbeat", json=beat, headers=agent).status_code == 200
    assert client.post("/api/agents/heartbeat", json=beat | {"name": "adm"}).status_code == 200  # admin
    operator = {"Authorization": f"Bearer {tokens[Role.OPERATOR]}"}
    assert client.post("/api/agents/heartbeat", json=beat, headers=operator).status_code == 403
    # An agent token reads nothing else, not even the agent list.
    assert client.get("/api/agents", headers=agent).status_code == 403
    assert client.get("/api/nodes", headers=agent).status_code == 403


def test_denied_and_bad_tokens_are_recorded(
    client: TestClient, tokens: dict[Role, str], session: Session
) -> None:
    viewer = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
    assert client.post("/api/clusters", json={"name": "x"}, headers=viewer).status_code == 403
    assert client.get("/api/nodes", headers={"Authorization": "Bearer mko_wrong"}).status_code == 401
    assert client.get("/api/nodes", headers={"Authorization": "Basic abc"}).status_code == 401
    kinds = [e.kind for e in session.scalars(select(AuthEvent).order_by(AuthEvent.id))]
    assert kinds == ["denied", "token_invalid"]


def test_token_revoke_and_expiry(client: TestClient, session: Session) -> None:
    _, plain = create_token(session, "short", Role.VIEWER, expires_in=timedelta(minutes=5))
    headers = {"Authorization": f"Bearer {plain}"}
    assert client.get("/api/me", headers=headers).json() == {
        "name": "short",
        "role": "viewer",
        "kind": "token",
    }
    token = revoke_token(session, "short")
    assert token.revoked_at is not None
    assert client.get("/api/me", headers=headers).status_code == 401
    _, plain = create_token(session, "old", Role.VIEWER, expires_in=timedelta(minutes=5))
    row = next(t for t in list_tokens(session) if t.name == "old")
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    assert client.get("/api/me", headers={"Authorization": f"Bearer {plain}"}).status_code == 401


def test_tokens_and_users_over_the_api_never_show_secrets(client: TestClient) -> None:
    created = client.post("/api/tokens", json={"name": "ci", "role": "operator", "expires_days": 1}).json()
    assert created["token"].startswith("mko_")
    listed = client.get("/api/tokens").text
    assert created["token"] not in listed and "token_hash" not in listed
    user = client.post("/api/users", json={"username": "ann", "password": "s3cret-pass", "role": "viewer"})
    assert user.status_code == 201 and "s3cret" not in user.text and "password" not in user.text
    assert client.post("/api/users", json={"username": "bob", "password": "short"}).status_code == 422
    assert client.delete("/api/tokens/ci").status_code == 204
    assert client.get("/api/me", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 401


def test_web_session_csrf_roles_and_expiry(settings: Settings, session: Session) -> None:
    create_user(session, settings, "viewer1", "viewer-pass", Role.VIEWER)
    app = create_app(settings)
    with TestClient(app) as browser:
        assert browser.get("/nodes", follow_redirects=False).headers["location"] == "/login?next=/nodes"
        page = browser.post(
            "/login", data={"username": "viewer1", "password": "viewer-pass", "next": "/nodes"}
        )
        assert page.status_code == 200 and "viewer1 (viewer)" in page.text
        cookie = browser.cookies.get("mko_session")
        assert cookie
        set_cookie = (
            browser.post(
                "/login", data={"username": "viewer1", "password": "viewer-pass"}, follow_redirects=False
            )
            .headers["set-cookie"]
            .lower()
        )
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie and "secure" not in set_cookie
        page = browser.get("/nodes")  # the second login started a new session with its own CSRF token
        assert "Add node" not in page.text  # a viewer is not offered what it cannot do
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        # The server enforces it anyway: a viewer's form post is refused, with or without CSRF.
        refused = browser.post("/clusters", data={"name": "x", "csrf_token": csrf.group(1)})
        assert refused.status_code == 403 and "cannot" in refused.text
        # The session reads the API too (GET), but API changes need the CSRF header.
        assert browser.get("/api/nodes").status_code == 200
        assert browser.post("/api/clusters", json={"name": "x"}).status_code == 403
        # Expired session: back to the login form.
        from mko.platform.db.models.access import WebSession

        for row in session.scalars(select(WebSession)):
            row.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
        assert browser.get("/nodes", follow_redirects=False).status_code == 303
    app.state.engine.dispose()


def test_csrf_missing_or_wrong_is_rejected(web: Any) -> None:
    assert web.post("/clusters", data={"name": "nocsrf"}).status_code == 403
    assert web.post("/clusters", data={"name": "bad", "csrf_token": "forged"}).status_code == 403
    assert web.form("/clusters", data={"name": "good"}, follow_redirects=False).status_code == 303
    assert web.form("/logout", follow_redirects=False).headers["location"] == "/login"
    assert web.get("/nodes", follow_redirects=False).status_code == 303


def test_login_attempts_are_limited_per_client(settings: Settings, session: Session) -> None:
    create_user(session, settings, "ann", "correct-horse", Role.VIEWER)
    app = create_app(settings.model_copy(update={"login_attempts": 3}))
    with TestClient(app) as browser:
        for _ in range(3):
            assert browser.post("/login", data={"username": "ann", "password": "nope"}).status_code == 401
        throttled = browser.post("/login", data={"username": "ann", "password": "correct-horse"})
        assert throttled.status_code == 429 and "Too many failed attempts" in throttled.text
    app.state.engine.dispose()
    kinds = [e.kind for e in session.scalars(select(AuthEvent))]
    assert kinds.count("login_failed") == 3 and "login_throttled" in kinds


def test_cli_users_and_tokens(cli: CliRunner, settings: Settings) -> None:
    assert (
        cli.invoke(
            cli_app, ["user", "add", "ops", "--role", "operator", "--password", "ops-password"]
        ).exit_code
        == 0
    )
    assert '"role": "operator"' in cli.invoke(cli_app, ["user", "list", "--json"]).stdout
    short = cli.invoke(cli_app, ["user", "add", "x", "--password", "short"])
    assert short.exit_code == 2 and "password" in short.stderr
    created = cli.invoke(cli_app, ["token", "create", "grafana", "--role", "viewer", "--expires-days", "30"])
    assert created.exit_code == 0
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("mko_")
    listed = cli.invoke(cli_app, ["token", "list", "--json"]).stdout
    assert token not in listed and token[:12] in listed
    assert cli.invoke(cli_app, ["token", "revoke", "grafana"]).exit_code == 0
    assert cli.invoke(cli_app, ["user", "passwd", "ops", "--password", "new-password"]).exit_code == 0
    assert cli.invoke(cli_app, ["user", "remove", "ops"]).exit_code == 0


def test_first_admin_password_is_printed_once_and_never_logged(settings: Settings, session: Session) -> None:
    generated = ensure_first_admin(session, settings, None)
    assert generated and len(generated) >= 16
    assert ensure_first_admin(session, settings, None) is None
    assert authenticate_password(session, settings, "admin", generated) is not None
    log_text = Path(settings.log_file).read_text() if Path(settings.log_file).exists() else ""
    assert generated not in log_text


def test_password_hashing_defaults_are_argon2_s_own_and_bad_costs_are_refused() -> None:
    costs = ("time_cost", "memory_cost", "parallelism")
    defaults = {name: Settings.model_fields[f"password_hash_{name}"].default for name in costs}
    reference = PasswordHasher()  # argon2-cffi's defaults: RFC 9106's low-memory profile
    assert defaults == {
        "time_cost": reference.time_cost,
        "memory_cost": reference.memory_cost,
        "parallelism": reference.parallelism,
    }
    for bad, field in (
        ({"password_hash_time_cost": 0}, "password_hash_time_cost"),
        ({"password_hash_memory_cost": 4}, "password_hash_memory_cost"),
        ({"password_hash_parallelism": 0}, "password_hash_parallelism"),
        ({"password_hash_memory_cost": 16, "password_hash_parallelism": 4}, "8 x password_hash_parallelism"),
    ):
        with pytest.raises(ValidationError, match=field):
            Settings(**bad)


def test_a_hash_takes_the_settings_costs_and_is_renewed_at_the_next_login_when_they_change(
    settings: Settings, session: Session
) -> None:
    create_user(session, settings, "ann", "correct-horse", Role.VIEWER)
    [user] = [u for u in list_users(session) if u.username == "ann"]
    cheap = user.password_hash
    assert extract_parameters(cheap).time_cost == settings.password_hash_time_cost
    assert extract_parameters(cheap).memory_cost == settings.password_hash_memory_cost

    stronger = settings.model_copy(update={"password_hash_time_cost": 2, "password_hash_memory_cost": 64})
    assert authenticate_password(session, stronger, "ann", "wrong-horse") is None
    assert user.password_hash == cheap  # a wrong password changes nothing
    assert authenticate_password(session, stronger, "ann", "correct-horse") is not None
    session.expire_all()
    renewed = next(u for u in list_users(session) if u.username == "ann").password_hash
    assert renewed != cheap
    assert (extract_parameters(renewed).time_cost, extract_parameters(renewed).memory_cost) == (2, 64)
    # The old settings still verify the new hash (it carries its own parameters), and renew it back.
    assert authenticate_password(session, settings, "ann", "correct-horse") is not None
    session.expire_all()
    back = next(u for u in list_users(session) if u.username == "ann").password_hash
    assert extract_parameters(back).time_cost == settings.password_hash_time_cost
