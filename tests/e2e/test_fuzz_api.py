"""Schemathesis against the live OpenAPI schema: no 5xx and no response outside the schema.

The app runs in-process inside an empty network namespace of its own (only ``lo``), so whatever the
fuzzer asks for (wakes, discovery scans, SSH, Proxmox) cannot send a packet anywhere else.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import checks
from sqlalchemy.orm import Session

from mko.api import create_app
from mko.lab import enter_netns
from mko.settings import Settings

pytestmark = pytest.mark.e2e

# No 5xx and no response outside the schema. Not "positive data acceptance": a schema-valid string is
# not always a valid MAC or cron expression, and those are refused (422 naming the field) on purpose.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def test_no_server_errors_and_responses_match_the_schema(
    settings: Settings, session: Session, isolated_netns: str, admin_token: str
) -> None:
    fast = settings.model_copy(
        update={
            "api_sync_wait": 0.5,
            "ssh_connect_timeout": 0.5,
            "probe_timeout": 0.2,
            "wol_default_timeout": 1.0,
            "agent_claim_wait": 0.5,  # an agent's claim long-polls; the fuzzer's must not
        }
    )
    with enter_netns(isolated_netns):
        app = create_app(fast)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {admin_token}"}
    failures: list[str] = []
    operations = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            @given(case=operation.as_strategy())
            @hypothesis_settings(
                max_examples=6,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
            )
            def run(case: Any) -> None:
                with enter_netns(isolated_netns):
                    case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, then report
                failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:400]}")
    finally:
        app.state.engine.dispose()
    print(f"schemathesis: {operations} operations, {len(failures)} with failures")
    assert operations > 40
    assert not failures, "\n".join(failures)
