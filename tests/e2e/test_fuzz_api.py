"""Schemathesis against a real `mko serve`: every phase (stateful included) and every check, 0 failures.

The server runs in a network namespace with nothing but loopback (tests/support/lab.py), so whatever the
fuzzer asks for (wakes, discovery scans, SSH, Proxmox) cannot send a packet anywhere else. The fuzzer
runs there too, as `st run --checks all`; tests/e2e/schemathesis.toml says, operation by operation,
where a schema-valid string may still be refused with 422 (and why). Excluded: only the route that
would revoke the fuzzer's own token.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mko.platform.settings import Settings
from support.serve import ServeProcess

# About a minute alone; on a shared, busy machine four or five times that. The run has its own limit
# (the subprocess's 900 s), so the test's must not be the suite's default 120 s.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(960)]

HERE = Path(__file__).parent
ST = Path(sys.executable).with_name("st")
SEED = "17"  # a fixed seed: the same requests every run, so a failure is never a coin toss
EXAMPLES = "25"  # per operation and phase; the whole run stays around a minute
# Timeouts short enough that the fuzzer's wakes, SSH and probes into the empty namespace end fast.
FAST = {
    "MKO_API_SYNC_WAIT": "0.5",
    "MKO_SSH_CONNECT_TIMEOUT": "0.5",
    "MKO_PROBE_TIMEOUT": "0.2",
    "MKO_WOL_DEFAULT_TIMEOUT": "1",
    "MKO_AGENT_CLAIM_WAIT": "0.5",  # an agent's claim long-polls; the fuzzer's must not
    "MKO_DISCOVERY_TIMEOUT": "0.2",
}


# Every power driver's settings are fields of the node schemas, and the coverage phase tries each field's
# edge cases: on a busy machine the run takes minutes. Its own subprocess timeout (900 s) bounds it.
@pytest.mark.timeout(900)
def test_schemathesis_finds_no_failure_in_any_phase_with_every_check(
    settings: Settings, admin_token: str, isolated_netns: str, tmp_path: Path
) -> None:
    with ServeProcess.start(isolated_netns, settings, tmp_path / "serve.log", FAST) as server:
        command = [
            "ip", "netns", "exec", isolated_netns, str(ST),
            "--config-file", str(HERE / "schemathesis.toml"),
            "run", f"{server.url}/openapi.json",
            "--checks", "all",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--exclude-path", "/api/tokens/{name}",  # DELETE would revoke the fuzzer's own token
            "--header", f"Authorization: Bearer {admin_token}",
            "--seed", SEED,
            "--max-examples", EXAMPLES,
            "--workers", "1",
            "--request-timeout", "30",
            "--no-color",
        ]  # fmt: skip
        # In tmp_path: schemathesis keeps its replay cache (.schemathesis/) in the working directory.
        run = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
        server.check_alive()
    summary = run.stdout[run.stdout.rfind("SUMMARY") :] or run.stdout[-3000:]
    print(summary)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", summary)
    assert tested is not None and int(tested.group(1)) > 60, summary
    assert "Stateful" in summary and "failures" not in summary.splitlines()[-1]
