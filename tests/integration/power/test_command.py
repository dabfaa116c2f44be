"""The command driver: argument vectors run on mko's host, and over SSH on a lab node's real sshd with
its host key verified; nothing ever goes through a shell."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.lab.netns import NodeSpec, enter_netns
from mko.operations.records import Actor
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.wol.node_power import power_status, run_power, start_power
from support.plugs import configure, power, power_state

# A tiny "power switch": a program that keeps the node's power in a file, like a relay would.
SWITCH = """\
import sys
from pathlib import Path
state = Path(sys.argv[2])
if sys.argv[1] == "status":
    print("power: " + (state.read_text() if state.exists() else "off"))
    sys.exit(0)
if sys.argv[1] == "busy":
    sys.exit(75)
state.write_text(sys.argv[1])
print("switched", sys.argv[1], "extra:", sys.argv[3:])
"""


@pytest.fixture
def switch(tmp_path: Path) -> tuple[Path, Path]:
    program = tmp_path / "switch.py"
    program.write_text(SWITCH)
    return program, tmp_path / "state"


def _reads_the_switch(program: Path, state: Path) -> list[str]:
    """The options of the switch's status program and what its output means."""
    return [
        "--command-status-argv",
        f"{sys.executable} {program} status {state}",
        "--command-on-regex",
        "power: on",
        "--command-off-regex",
        "power: off",
    ]


def test_local_argv_on_off_status_without_a_shell(
    cli: CliRunner, session: Session, settings: Settings, switch: tuple[Path, Path], tmp_path: Path
) -> None:
    program, state = switch
    node_id = create_node(session, NodeCreate(hostname="cmd-local", ip_address="10.0.0.80")).id
    hostile = "$(touch " + str(tmp_path / "pwned") + ")"
    base = f"{sys.executable} {program}"
    configured = configure(
        cli,
        node_id,
        "--method",
        "command",
        "--command-on-argv",
        f"{base} on {state} '{hostile}'",
        "--command-off-argv",
        f"{base} off {state}",
        *_reads_the_switch(program, state),
        "--json",
    )
    assert configured.exit_code == 0, configured.output
    shown = json.loads(configured.stdout)
    assert shown["command_on_argv"] == [sys.executable, str(program), "on", str(state), hostile]
    result, on = power(cli, node_id, "on", timeout=15)
    assert result.exit_code == 0 and on["nodes"][0]["state"] == "up", result.output
    assert state.read_text() == "on"
    assert not (tmp_path / "pwned").exists()  # the argument reached the program as text, never a shell
    assert power_state(cli, node_id) == "on"
    result, off = power(cli, node_id, "off", timeout=15)
    assert result.exit_code == 0 and off["nodes"][0]["state"] == "off" and state.read_text() == "off"


def test_exit_codes_decide_retry_or_failure(
    cli: CliRunner, session: Session, settings: Settings, switch: tuple[Path, Path]
) -> None:
    program, state = switch
    node_id = create_node(session, NodeCreate(hostname="cmd-exit", ip_address="10.0.0.81")).id
    configure(
        cli,
        node_id,
        "--method",
        "command",
        "--command-on-argv",
        f"{sys.executable} {program} busy {state}",
        *_reads_the_switch(program, state),
    )
    result, busy = power(cli, node_id, "on", timeout=15)
    assert result.exit_code == 1 and busy["nodes"][0]["state"] == "failed"
    assert "exited 75" in busy["nodes"][0]["error"]
    configure(cli, node_id, "--command-on-argv", "/nonexistent/power-tool on")
    result, missing = power(cli, node_id, "on", timeout=15)
    assert result.exit_code == 1 and "cannot run '/nonexistent/power-tool'" in missing["nodes"][0]["error"]
    bad = configure(cli, node_id, "--command-on-argv", "unterminated 'quote")
    assert bad.exit_code == 2 and "command_on_argv" in bad.stderr


def test_over_ssh_with_a_verified_host_key(lab_factory: Any, settings: Settings, session: Session) -> None:
    running = lab_factory([NodeSpec()], ssh=True)
    running.power_on_all()
    assert running.ssh is not None
    node = running.node("n1")
    mko_node = create_node(session, NodeCreate(hostname="cmd-ssh", ip_address="10.0.0.82"))
    params = {
        "wol_method": "command",
        "command_on_argv": ["ethtool", "-s", "veth0", "wol", "g"],
        "command_status_argv": ["echo", "power: on; $(id)"],
        "command_on_regex": r"power: on; \$\(id\)",  # the text arrived as it was, unexpanded
        "command_ssh_host": node.ip,
        "command_ssh_port": running.ssh.port,
        "command_ssh_user": "root",
        "command_ssh_key_path": str(running.ssh.client_key),
    }
    from mko.inventory.nodes import update_node
    from mko.inventory.schemas import NodeUpdate

    update_node(session, mko_node.id, NodeUpdate.model_validate(params))
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)

    async def power_on(read_status: bool) -> Any:
        with sessions() as own:
            prepared = start_power(own, settings, mko_node.id, "on", actor=Actor.cli(), wait=True, timeout=20)
            status = await power_status(own, settings, mko_node.id) if read_status else None
        return status, await run_power(sessions, settings, prepared)

    # Unknown host key: refused, nothing runs, and the message says how to trust it.
    with enter_netns(running.lab.orch):
        _none, operation = asyncio.run(power_on(read_status=False))
    assert operation.status.value == "failed"
    assert "not trusted yet" in operation.summary and "ssh-keyscan" in operation.summary
    n1 = running.nodes[0].system
    assert n1 is not None and not n1.calls("ethtool")
    # Trusted (the key recorded in mko's known_hosts), the command runs as an argument list.
    settings.ssh_known_hosts.parent.mkdir(parents=True, exist_ok=True)
    settings.ssh_known_hosts.write_text("\n".join(running.known_hosts_lines()) + "\n")
    with enter_netns(running.lab.orch):
        status, operation = asyncio.run(power_on(read_status=True))
    engine.dispose()
    assert status["state"] == "on"
    assert operation.status.value == "succeeded", operation.summary
    assert ["-s", "veth0", "wol", "g"] in [
        c["argv"] for c in n1.calls("ethtool")
    ]  # the stand-in records its arguments
