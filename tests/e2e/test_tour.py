"""The README's tour, pasted as it stands into a root shell: every command against the lab exits 0.

The block between ``<!-- tour:lab -->`` and ``<!-- /tour:lab -->`` runs in one bash, as a person pasting
it would run it (``eval "$(mko lab env)"`` and ``TOKEN=…`` carry over between lines), with ``set -e``
so the first command that fails stops it and ``set -x`` naming it. Only where this machine is shared
does the test differ from the reader: the lab gets its own directory (``MKO_LAB_DIR``), namespace
prefix and port, so it never meets another lab.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from labcli import ROOT, free_port

# The tour's lab is its own (prefix, port, directory): it needs no group, only to start early.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

_BLOCK = re.compile(r"<!-- tour:lab -->\s*```bash\n(?P<script>.*?)```\s*<!-- /tour:lab -->", re.S)


def _tour() -> str:
    found = _BLOCK.search((ROOT / "README.md").read_text())
    assert found, "README.md has no <!-- tour:lab --> block"
    return found["script"]


def test_the_readme_tour_runs_against_the_lab_and_every_command_exits_0(
    tmp_path: Path, unique_prefix: Callable[[], str]
) -> None:
    script = _tour()
    assert "mko lab up" in script and 'eval "$(mko lab env)"' in script and "mko lab down" in script
    lab_up = script.index("mko lab up")
    # Every command that could reach a network runs after the lab's environment is in place.
    assert script.index('eval "$(mko lab env)"') < min(
        script.index(seed) for seed in ("wol wake-node", "wol wake-cluster", "wol enable", "ups status")
    )
    assert "255.255.255.255" not in script
    prefix, port = unique_prefix(), free_port()
    script = script.replace("mko lab up", f"mko lab up --prefix {prefix} --port {port}", 1)
    script = script.replace("127.0.0.1:8470", f"127.0.0.1:{port}")
    assert script.index("mko lab up") == lab_up
    env = os.environ | {
        "MKO_CONFIG": str(tmp_path / "none.toml"),
        "MKO_LAB_DIR": str(tmp_path / "lab"),
        "MKO_LOG_DIR": str(tmp_path / "logs"),
    }
    for name in ("MKO_DATABASE_URL", "MKO_NETNS", "MKO_SSH_KNOWN_HOSTS", "MKO_SSH_DEFAULT_KEY"):
        env.pop(name, None)
    try:
        # The README is a shell script by nature (eval, $TOKEN, pipes): bash runs it as the reader's
        # shell would; no value of the test's reaches it except through the environment above.
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-x", "-s"],
            input=script,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"the tour stopped:\n{result.stderr[-4000:]}\n{result.stdout[-3000:]}"
        out = result.stdout
        assert "3/3 node(s) up" in out  # wake-cluster --wait: every node answered
        assert "next: `mko cluster recover 1` starts MicroK8s" in out  # and what makes them Ready
        assert "3/3 Ready" in out  # recover
        assert '"status":"succeeded"' in out.replace(" ", "")  # the API's {"wait": true} wake
        assert "lab down in" in out
    finally:
        if (tmp_path / "lab" / "lab.json").exists():
            subprocess.run(
                [str(ROOT / ".venv/bin/mko"), "lab", "down", "--dir", str(tmp_path / "lab")],
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
