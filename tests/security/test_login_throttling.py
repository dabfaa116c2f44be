"""Login throttling per account and per address, known browsers, and whose X-Forwarded-For counts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.access.throttle import LoginThrottle
from mko.access.users import create_user
from mko.app import create_app
from mko.platform.db.models.access import AuthEvent, Role
from mko.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_account_backoff_doubles_is_capped_and_only_that_account_resets_it() -> None:
    clock = Clock()
    throttle = LoginThrottle(100, 300, free_failures=3, backoff_max=30, clock=clock)
    waits = []
    for _ in range(10):
        waits.append(throttle.retry_after("admin", "10.0.0.66"))
        throttle.failed("admin", "10.0.0.66")
    # 3 free failures, then 1, 2, 4 ... seconds after the last failure, never more than 30 s.
    assert waits[:4] == [0, 0, 0, 1]
    assert waits[4:7] == [2, 4, 8] and waits[9] == 30
    assert throttle.retry_after("ADMIN ", "10.9.9.9") == 30  # the account, from anywhere, any spelling
    # Another account's good login changes nothing for this one; its own does.
    throttle.succeeded("bob")
    assert throttle.retry_after("admin", "10.0.0.1") == 30
    clock.now += 30
    assert throttle.retry_after("admin", "10.0.0.1") == 0  # backoff, not lock-out
    throttle.succeeded("admin")
    throttle.failed("admin", "10.0.0.1")
    assert throttle.retry_after("admin", "10.0.0.1") == 0


def test_address_limit_counts_every_account_and_no_login_resets_it() -> None:
    clock = Clock()
    throttle = LoginThrottle(5, 300, free_failures=100, clock=clock)
    for name in ("a", "b", "c", "d"):
        throttle.failed(name, "10.0.0.66")
    throttle.succeeded("mallory")  # the attacker's own account logs in: the address keeps its count
    assert throttle.retry_after("e", "10.0.0.66") == 0
    throttle.failed("e", "10.0.0.66")
    assert throttle.retry_after("anyone", "10.0.0.66") == 300
    assert throttle.retry_after("anyone", "10.0.0.67") == 0  # per address
    clock.now += 301
    assert throttle.retry_after("anyone", "10.0.0.66") == 0


def test_a_known_browser_is_never_locked_out_by_others_but_has_its_own_limit() -> None:
    clock = Clock()
    throttle = LoginThrottle(5, 300, free_failures=0, backoff_max=300, key=b"k" * 32, clock=clock)
    cookie = throttle.device_cookie("admin")
    device = throttle.device_of(cookie, "Admin")
    assert device is not None
    assert throttle.device_of(cookie, "bob") is None  # issued to another account
    assert throttle.device_of(cookie.replace(".", ".0", 1), "admin") is None  # forged signature
    assert LoginThrottle(5, 300, key=b"x" * 32).device_of(cookie, "admin") is None  # another key
    for _ in range(20):  # someone else hammers the account and the address
        throttle.failed("admin", "10.0.0.66")
    assert throttle.retry_after("admin", "10.0.0.66") > 0
    assert throttle.retry_after("admin", "10.0.0.66", device) == 0
    for _ in range(5):  # a stolen cookie without the password gets `attempts` tries per window
        throttle.failed("admin", "10.0.0.66", device)
    assert throttle.retry_after("admin", "10.0.0.66", device) == 300


def test_memory_stays_bounded_under_a_flood_of_names() -> None:
    throttle = LoginThrottle(5, 300)
    for i in range(3 * LoginThrottle.MAX_ENTRIES):
        throttle.failed(f"user{i}" + "x" * 1000, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    sizes = len(throttle._accounts) + len(throttle._addresses) + len(throttle._devices)
    assert sizes <= LoginThrottle.MAX_ENTRIES + 2


def _login(browser: TestClient, username: str, password: str, **headers: str) -> int:
    response = browser.post(
        "/login", data={"username": username, "password": password}, headers=headers, follow_redirects=False
    )
    return response.status_code


@pytest.fixture
def accounts(settings: Settings, session: Session) -> Session:
    create_user(session, settings, "admin2", "correct-horse", Role.ADMIN)
    create_user(session, settings, "mallory", "mallory-pw", Role.VIEWER)
    return session


def test_web_login_guessing_one_account_does_not_lock_out_the_real_user(
    settings: Settings, accounts: Session
) -> None:
    app = create_app(settings)
    # The app's throttle with a clock that stands still, so argon2's pace cannot let a backoff expire.
    app.state.login_throttle = LoginThrottle(5, 300, free_failures=3, backoff_max=300, clock=Clock())
    # One server (one lifespan, one event loop, as uvicorn runs it); two browsers with their own cookies.
    with TestClient(app) as real_user:
        attacker = TestClient(app)
        assert _login(real_user, "admin2", "correct-horse") == 303  # signed in before: a known browser
        real_user.post("/logout")
        # The old weakness: 4 guesses, one good login of the attacker's own account, repeat forever.
        codes = []
        for _ in range(3):
            codes += [_login(attacker, "admin2", f"guess{i}") for i in range(4)]
            codes.append(_login(attacker, "mallory", "mallory-pw"))
        assert 429 in codes  # the account backoff and the address limit held despite mallory's logins
        assert _login(attacker, "admin2", "correct-horse") == 429  # even the right password waits
        # The real user, on the same address, in the browser they signed in from before, gets in.
        assert _login(real_user, "admin2", "correct-horse") == 303
    app.state.engine.dispose()
    kinds = [e.kind for e in accounts.scalars(select(AuthEvent))]
    assert "login_throttled" in kinds and "login_failed" in kinds


def test_forwarded_for_is_believed_only_from_configured_proxies(settings: Settings, session: Session) -> None:
    def sources(trusted: list[str], peer: str, believed: bool) -> list[str]:
        app = create_app(settings.model_copy(update={"trusted_proxies": trusted, "login_attempts": 3}))
        with TestClient(app, client=(peer, 40000)) as browser:
            codes = [
                _login(browser, f"nobody{i}", "x", **{"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(5)
            ]
        app.state.engine.dispose()
        found = [e.source for e in session.scalars(select(AuthEvent).where(AuthEvent.kind == "login_failed"))]
        session.query(AuthEvent).delete()
        session.commit()
        assert (codes.count(401), codes.count(429)) == ((5, 0) if believed else (3, 2)), codes
        return found

    # Default: no proxy is trusted; a rotating header neither escapes the limit nor forges the source.
    assert sources([], "127.0.0.1", believed=False) == ["127.0.0.1"] * 3
    # Loopback is not one of the configured proxies: not believed either.
    assert sources(["10.0.0.0/24"], "127.0.0.1", believed=False) == ["127.0.0.1"] * 3
    assert sources(["127.0.0.1"], "127.0.0.1", believed=True) == [f"203.0.113.{i}" for i in range(5)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serve(settings: Settings, session: Session) -> Iterator[Any]:
    """Start the real `mko serve` (uvicorn) on loopback with extra environment; stop it after."""
    servers: list[subprocess.Popen[str]] = []

    def start(**extra: str) -> str:
        port = _free_port()
        env = os.environ | {"MKO_REACHABILITY_INTERVAL": "0", "MKO_ADMIN_PASSWORD": "first-admin-pw", **extra}
        server = subprocess.Popen(
            [sys.executable, "-m", "mko", "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        servers.append(server)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/api/health", timeout=1)
                return base
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "mko serve did not start"
                time.sleep(0.1)

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)
        if server.stderr:
            server.stderr.close()


@pytest.mark.e2e
def test_mko_serve_ignores_forwarded_for_from_loopback_unless_configured(
    serve: Any, session: Session
) -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default; `mko serve` must not."""
    forged = {"X-Forwarded-For": "198.51.100.7"}
    base = serve()
    assert (
        httpx.post(f"{base}/login", data={"username": "x", "password": "y"}, headers=forged).status_code
        == 401
    )
    base = serve(MKO_TRUSTED_PROXIES="127.0.0.1")
    assert (
        httpx.post(f"{base}/login", data={"username": "x", "password": "y"}, headers=forged).status_code
        == 401
    )
    session.expire_all()
    events = session.scalars(select(AuthEvent).where(AuthEvent.kind == "login_failed").order_by(AuthEvent.id))
    assert [e.source for e in events] == ["127.0.0.1", "198.51.100.7"]
