"""HTTP hardening: body size limit, strict JSON, 422s that render, security headers, Allow, route order."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from mko.access.users import create_user
from mko.app import create_app
from mko.platform.db.models.access import Role
from mko.platform.settings import Settings

LIMIT = 4096


@pytest.fixture
def small(settings: Settings, session: Session, admin_token: str) -> Iterator[TestClient]:
    """The app with a 4 KiB body limit, as an admin."""
    app = create_app(settings.model_copy(update={"max_request_bytes": LIMIT}))
    with TestClient(app, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client
    app.state.engine.dispose()


# ----------------------------------------------------------------------------- 413


def test_a_body_over_the_limit_gets_413_and_nothing_is_stored(small: TestClient) -> None:
    big = {"name": "big", "description": "x" * LIMIT}
    answer = small.post("/api/clusters", json=big)
    assert answer.status_code == 413
    assert "detail" in answer.json()
    assert small.get("/api/clusters").json() == []
    # Just under the limit (JSON whitespace: the fields' own length limits are not what is tested).
    body = b'{"name": "fits"' + b" " * (LIMIT - 100) + b"}"
    fits = small.post("/api/clusters", content=body, headers={"Content-Type": "application/json"})
    assert fits.status_code == 201, fits.text


def test_a_streamed_body_without_length_is_cut_at_the_limit(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "streamed", "description": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}'

    answer = small.post("/api/clusters", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert small.get("/api/clusters").json() == []


def test_a_form_post_over_the_limit_gets_413(small: TestClient) -> None:
    answer = small.post("/login", data={"username": "admin", "password": "p" * LIMIT})
    assert answer.status_code == 413


# ----------------------------------------------------------------------------- JSON that Python lets through


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "c", "wol_port": NaN}',
        b'{"hostname": "n1", "ip_address": "10.0.0.1", "wol_port": Infinity}',
        b'{"hostname": "n1", "ip_address": "10.0.0.1", "probe_port": -Infinity}',
        b'{"hostname": "\\ud800", "ip_address": "10.0.0.1"}',
        b'{"hostname": "n1", "ip_address": "10.0.0.1", "description": "a\\udfffb"}',
        b'{"\\ud83d": 1}',
        b'{"hostname": "n1", "ip_address": "\xff\xfe10.0.0.1"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "lone-surrogate",
        "low-surrogate",
        "surrogate-key",
        "latin1",
        "deep",
    ],
)
def test_json_python_would_accept_gets_a_422_that_renders(client: TestClient, raw: bytes) -> None:
    answer = client.post("/api/nodes", content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"][0] == "body"
    assert client.get("/api/nodes").json() == []


def test_nan_in_a_wake_option_is_refused_before_anything_runs(client: TestClient) -> None:
    answer = client.post(
        "/api/nodes/wol/wake",
        content=b'{"node_ids": [1], "delay": NaN}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert client.get("/api/operations").json() == []


def test_a_422_shows_short_input_back_and_leaves_long_input_out(client: TestClient) -> None:
    short = client.post("/api/nodes", json={"hostname": "n1", "ip_address": "10.0.0.1", "ssh_port": "abc"})
    assert short.status_code == 422
    [error] = [e for e in short.json()["detail"] if e["loc"][-1] == "ssh_port"]
    assert error["input"] == "abc"
    long = client.post(
        "/api/nodes", json={"hostname": "n1", "ip_address": "10.0.0.1", "ssh_port": "9" * 5000}
    )
    assert long.status_code == 422
    [error] = [e for e in long.json()["detail"] if e["loc"][-1] == "ssh_port"]
    assert "input" not in error


# ----------------------------------------------------------------------------- headers


INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|\sstyle\s*=", re.IGNORECASE)


def _assert_hardened(answer: object, what: str) -> None:
    headers = answer.headers  # type: ignore[attr-defined]
    assert headers["x-frame-options"] == "DENY", what
    assert headers["x-content-type-options"] == "nosniff", what
    assert headers["referrer-policy"] == "no-referrer", what
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy, what
    assert "script-src 'self'" in policy, what


def test_every_kind_of_response_carries_the_security_headers(small: TestClient) -> None:
    anonymous = TestClient(small.app)
    answers = {
        "json": small.get("/api/clusters"),
        "health": anonymous.get("/api/health"),
        "401": anonymous.get("/api/nodes"),
        "404": small.get("/api/nodes/999"),
        "404 route": small.get("/nowhere"),
        "405": small.put("/api/clusters"),
        "413": small.post("/api/clusters", json={"name": "x" * LIMIT}),
        "422": small.post("/api/clusters", content=b"{", headers={"Content-Type": "application/json"}),
        "login page": anonymous.get("/login"),
        "redirect": anonymous.get("/", follow_redirects=False),
        "static": anonymous.get("/static/app.css"),
        "schema": anonymous.get("/openapi.json"),
        "docs": anonymous.get("/docs"),
        "redoc": anonymous.get("/redoc"),
    }
    for what, answer in answers.items():
        _assert_hardened(answer, what)
    # The docs page loads Swagger UI from mko itself (no CDN, works offline), under the pages' policy.
    assert (
        answers["docs"].headers["content-security-policy"]
        == answers["login page"].headers["content-security-policy"]
    )
    assert "http" not in answers["docs"].text and not INLINE.search(answers["docs"].text)
    bundle = anonymous.get("/docs-assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    _assert_hardened(bundle, "docs assets")


def test_redoc_styles_apply_by_a_fresh_nonce_and_its_scripts_stay_strict(small: TestClient) -> None:
    anonymous = TestClient(small.app)
    first, second = anonymous.get("/redoc"), anonymous.get("/redoc")
    nonces = []
    for answer in (first, second):
        policy = answer.headers["content-security-policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        # Scripts as on every page: files from mko only, no inline, no eval, no nonce.
        assert directives["script-src"] == "'self'"
        nonce = re.search(r"'nonce-([A-Za-z0-9_-]{20,})'", directives["style-src"])
        assert nonce is not None and "'unsafe-inline'" not in directives["style-src"]
        # The nonce reaches ReDoc through the attribute of mko's own start-up script, nowhere else.
        assert answer.text.count(nonce.group(1)) == 1
        assert f'<script src="/static/redoc.js" nonce="{nonce.group(1)}">' in answer.text
        assert "http" not in answer.text and not INLINE.search(answer.text)
        nonces.append(nonce.group(1))
    assert nonces[0] != nonces[1]
    bundle = anonymous.get("/docs-assets/redoc.standalone.js")
    assert bundle.status_code == 200 and "Redoc" in bundle.text[:2000]


def test_pages_have_no_inline_script_or_style(
    settings: Settings, session: Session, client: TestClient
) -> None:
    cluster = client.post("/api/clusters", json={"name": "c1"}).json()
    node = client.post(
        "/api/nodes", json={"hostname": "n1", "ip_address": "10.0.0.1", "cluster_id": cluster["id"]}
    )
    client.post("/api/schedules", json={"name": "s1", "cron": "0 6 * * *", "cluster_id": cluster["id"]})
    create_user(session, settings, "op", "operator-pw", Role.OPERATOR)
    app = create_app(settings)
    with TestClient(app) as web:
        assert web.post("/login", data={"username": "op", "password": "operator-pw"}).status_code == 200
        for path in (
            "/",
            "/nodes",
            f"/nodes/{node.json()['id']}",
            "/clusters",
            f"/clusters/{cluster['id']}",
            "/operations",
            "/schedules",
            "/rules",
            "/ups",
            "/login",
        ):
            page = web.get(path)
            assert page.status_code == 200, path
            _assert_hardened(page, path)
            assert not INLINE.search(page.text), (path, INLINE.search(page.text))
    app.state.engine.dispose()


# ----------------------------------------------------------------------------- 405 and route order


def test_405_names_every_method_of_the_path(client: TestClient) -> None:
    cases = {
        ("PUT", "/api/ups/5"): "DELETE, GET, HEAD",
        ("OPTIONS", "/api/clusters"): "GET, HEAD, POST",
        ("PUT", "/api/nodes/1"): "DELETE, GET, HEAD, PATCH",
        ("GET", "/api/nodes/1/wol/wake"): "POST",
    }
    for (method, path), allow in cases.items():
        answer = client.request(method, path)
        assert answer.status_code == 405, (method, path, answer.text)
        assert answer.headers["allow"] == allow, (method, path)


def test_fixed_paths_win_over_ids(client: TestClient) -> None:
    # DELETE /api/ups/monitor was taken for /api/ups/{ups_id} with the id "monitor" (a 422).
    monitor = client.delete("/api/ups/monitor")
    assert monitor.status_code == 405 and monitor.headers["allow"] == "GET, HEAD"
    reach = client.patch("/api/nodes/reachability")
    assert reach.status_code == 405 and reach.headers["allow"] == "GET, HEAD"
    assert client.get("/api/ups/monitor").status_code == 200
    assert client.get("/api/nodes/reachability").status_code == 200
    # An id must be a number: anything else is no such resource.
    assert client.get("/api/nodes/abc").status_code == 404
    assert client.get("/api/nodes/-1").status_code == 404
    assert client.get("/api/nodes/99999999999999999999999").status_code == 404


def test_the_schema_documents_every_answer_the_middleware_gives(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "413" in statuses, (method, path)
            assert "401" in statuses or path == "/api/health", (method, path)
            takes_input = operation.get("parameters") or operation.get("requestBody")
            assert "422" in statuses or not takes_input, (method, path)
    assert "/api/ups/{ups_id}" in schema["paths"]  # the :int converters do not leak into the schema
    assert json.dumps(schema).count(":int") == 0


# ----------------------------------------------------------------------------- values of the documented type


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/nodes/wol/wake", {"node_ids": [1], "delay": True}, "delay"),
        ("/api/nodes/wol/wake", {"node_ids": [1], "retries": "3"}, "retries"),
        ("/api/nodes/wol/wake", {"node_ids": [1], "wait": 0}, "wait"),
        ("/api/nodes", {"hostname": "n1", "ip_address": "10.0.0.1", "wol_enabled": 1.0}, "wol_enabled"),
        ("/api/agents/claim", {"name": "pi", "wait": False}, "wait"),
        ("/api/nodes/wol/wake", {"node_ids": [1], "timeout": 0}, "timeout"),
        ("/api/nodes/wol/collect-mac", {"node_ids": []}, "node_ids"),
    ],
)
def test_a_value_of_another_type_or_range_than_documented_is_refused(
    client: TestClient, path: str, body: dict[str, object], field: str
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert field in [e["loc"][-1] for e in answer.json()["detail"]]
    assert client.get("/api/operations").json() == []


def test_enums_and_dates_are_still_read_from_their_json_strings(client: TestClient) -> None:
    node = client.post(
        "/api/nodes", json={"hostname": "n1", "ip_address": "10.0.0.1", "role": "control-plane"}
    )
    assert node.status_code == 201 and node.json()["role"] == "control-plane"
    assert client.get("/api/ups/events", params={"since": "2026-01-31T12:00:00Z"}).status_code == 200
    # A bare number is not a date (pydantic would have read it as seconds since 1970).
    assert client.get("/api/ups/events", params={"since": "0.5"}).status_code == 422
