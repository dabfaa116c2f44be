"""The real entry points in subprocesses: `python cli.py`, `mko`, and `mko serve` over TCP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
MKO = Path(sys.executable).parent / "mko"

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "MKO_DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}",
        "MKO_LOG_DIR": str(tmp_path / "logs"),
        "MKO_CONFIG": str(tmp_path / "none.toml"),
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


def test_python_cli_py_and_mko_are_the_same_app(env: dict[str, str]) -> None:
    for command in ([sys.executable, "cli.py"], [str(MKO)]):
        result = _run(env, *command, "--help")
        assert result.returncode == 0, result.stderr
        for group in ("cluster", "node", "db", "serve"):
            assert group in result.stdout
    assert _run(env, sys.executable, "cli.py", "cluster", "add", "home").returncode == 0
    added = _run(
        env, str(MKO), "node", "add", "cp1", "10.0.0.11", "--cluster-id", "1", "--mac", "AA-BB-CC-DD-EE-01"
    )
    assert added.returncode == 0, added.stderr
    listed = json.loads(_run(env, sys.executable, "cli.py", "node", "list", "--json").stdout)
    assert [(n["hostname"], n["wol_mac_address"]) for n in listed] == [("cp1", "aa:bb:cc:dd:ee:01")]
    bad = _run(env, sys.executable, "cli.py", "node", "add", "cp2", "10.0.0.12", "--mac", "nope")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "wol_mac_address" in bad.stderr
    log = Path(env["MKO_LOG_DIR"]) / "orchestrator.log"
    assert log.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_docs_and_api(env: dict[str, str]) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [str(MKO), "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/api/health", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "mko serve did not start"
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
        # The first run created the admin and printed its password once; the API needs credentials.
        assert httpx.get(f"{base}/api/nodes", timeout=5).status_code == 401
        created = _run(env, str(MKO), "token", "create", "e2e", "--role", "viewer")
        token = created.stdout.strip().splitlines()[-1]
        listed = httpx.get(f"{base}/api/nodes", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert listed.json() == []
        assert httpx.get(f"{base}/", timeout=5).headers["location"] == "/login?next=/"
        assert httpx.get(f"{base}/login", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stderr:
            server.stderr.close()
