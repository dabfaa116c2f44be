"""The webhook driver against a MAAS-style power service fake: requests, headers, body, the secret header,
status regexes, and which failures are retried."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from support.plugs import Webhook, configure, power, power_state, serving

API_KEY = "hook-key-51c9e0"


@pytest.fixture
def hook() -> Iterator[Webhook]:
    yield from serving(Webhook(api_key=API_KEY))


@pytest.fixture
def node_id(session: Session) -> int:
    return create_node(session, NodeCreate(hostname="hooked", ip_address="10.0.0.61")).id


def _configure(cli: CliRunner, node_id: int, hook: Webhook, *extra: str, key: str = API_KEY) -> Any:
    base = f"http://127.0.0.1:{hook.port}/machines/nas"
    return configure(
        cli,
        node_id,
        "--method",
        "webhook",
        "--webhook-on-url",
        f"{base}/on",
        "--webhook-off-url",
        f"{base}/off",
        "--webhook-status-url",
        base,
        "--webhook-headers",
        "X-Site: rack-1; X-Trace: mko",
        "--webhook-body",
        '{"reason": "ups"}',
        "--webhook-content-type",
        "application/json",
        "--webhook-secret-header",
        "X-Api-Key",
        "--webhook-secret",
        "-",
        *extra,
        "--json",
        secret=key,
    )


def test_on_off_status_send_method_headers_body_and_the_secret_header(
    cli: CliRunner, node_id: int, hook: Webhook
) -> None:
    configured = _configure(cli, node_id, hook)
    assert configured.exit_code == 0, configured.output
    assert API_KEY not in configured.stdout and json.loads(configured.stdout)["webhook_secret_set"] is True
    result, on = power(cli, node_id, "on")
    assert result.exit_code == 0 and on["nodes"][0]["state"] == "up", result.output
    method, path, headers, body = hook.requests[0]
    assert (method, path, body) == ("POST", "/machines/nas/on", '{"reason": "ups"}')
    assert headers["X-Api-Key"] == API_KEY and headers["X-Site"] == "rack-1"
    assert headers["Content-Type"] == "application/json"
    assert ("GET", "/machines/nas") in [
        (m, p) for m, p, _h, _b in hook.requests
    ]  # verified by the status URL
    assert power_state(cli, node_id) == "on"
    result, off = power(cli, node_id, "off")
    assert result.exit_code == 0 and off["nodes"][0]["state"] == "off" and hook.running == {"nas": False}


def test_a_status_body_matching_neither_regex_is_unknown(cli: CliRunner, node_id: int, hook: Webhook) -> None:
    _configure(cli, node_id, hook, "--webhook-on-regex", "powered: yes", "--webhook-off-regex", "powered: no")
    assert power_state(cli, node_id) == "unknown"


def test_wrong_key_is_fatal_and_a_busy_service_is_retried(
    cli: CliRunner, node_id: int, hook: Webhook
) -> None:
    _configure(cli, node_id, hook, key="not-the-key")
    result, out = power(cli, node_id, "on")
    assert result.exit_code == 1 and "refused the credentials (HTTP 401" in out["nodes"][0]["error"]
    assert out["nodes"][0]["attempts"] == 0 and "not-the-key" not in result.stdout
    _configure(cli, node_id, hook)
    hook.fail_next = [503]  # the first request meets a busy service; the next round succeeds
    result, out = power(cli, node_id, "on")
    assert result.exit_code == 0 and out["nodes"][0]["state"] == "up", result.output


def test_bad_settings_are_refused_naming_the_field(cli: CliRunner, node_id: int) -> None:
    for option, value, field in (
        ("--webhook-on-url", "ftp://hub/on", "webhook_on_url"),
        ("--webhook-on-url", "https://user:pw@hub/on", "webhook_on_url"),
        ("--webhook-on-regex", "([unclosed", "webhook_on_regex"),
        ("--webhook-headers", "no colon here", "webhook_headers"),
        ("--webhook-method", "BREW", "webhook_method"),
    ):
        result = configure(cli, node_id, "--method", "webhook", option, value)
        assert result.exit_code == 2 and field in result.stderr, (option, result.stderr)
    missing = configure(cli, node_id, "--method", "webhook")
    assert missing.exit_code == 2 and "webhook_on_url" in missing.stderr
