"""Guards for the command line's start-up: which modules a command imports (never how long it takes).

Each command runs in a fresh interpreter under ``python -X importtime``; the test reads the imported
module names from stderr and asserts that the heavy ones a command does not need stay out.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from sqlalchemy.orm import Session

from mko.platform.db.models.inventory import Node

RUN = "import sys; sys.argv = ['mko', *sys.argv[1:]]; from mko.cli import main; main()"

NOT_FOR_HELP = (
    "sqlalchemy",
    "alembic",
    "pydantic_settings",
    "apprise",
    "rich",
    "pygments",
    "cryptography",
    "argon2",
    "croniter",
    "asyncssh",
    "fastapi",
    "httpx",
    "proxmoxer",
    "pyghmi",
    "psycopg",
    "mko.inventory",
    "mko.wol",
    "mko.platform.db",
)
# Clients and frameworks no plain read or wake needs.
HEAVY_CLIENTS = (
    "alembic",
    "apprise",
    "rich",
    "pygments",
    "asyncssh",
    "fastapi",
    "croniter",
    "proxmoxer",
    "pyghmi",
    "psycopg",
    "httpx",
)
NOT_FOR_WAKE = (*HEAVY_CLIENTS, "mko.ssh", "mko.nic")
NOT_FOR_NODE_LIST = (*HEAVY_CLIENTS, "cryptography", "mko.ssh", "mko.power", "mko.wol")


def _imported(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", RUN, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    assert "mko.cli" in names  # the parse worked
    return names


def _offenders(imported: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(n for n in imported if any(n == b or n.startswith(b + ".") for b in banned))


def test_root_help_imports_no_group_and_no_database() -> None:
    assert _offenders(_imported(["--help"]), NOT_FOR_HELP) == []


def test_node_list_imports_only_the_read_path(settings: object, session: Session, tmp_path: Path) -> None:
    session.add_all(Node(hostname=f"n{i}", ip_address=f"10.0.0.{i}") for i in range(1, 4))
    session.commit()
    env = dict(os.environ)
    imported = _imported(["node", "list"], env)
    assert _offenders(imported, NOT_FOR_NODE_LIST) == []
    assert "mko.inventory.read" in imported


def test_wake_node_imports_no_ssh_rich_or_alembic(settings: object, session: Session) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("0.0.0.0", 0))
    receiver.settimeout(30)
    try:
        session.add(
            Node(
                hostname="n1",
                ip_address="127.0.0.1",
                wol_enabled=True,
                wol_mac_address="02:00:00:00:00:01",
                wol_broadcast_address="127.255.255.255",
                wol_port=receiver.getsockname()[1],
            )
        )
        session.commit()
        imported = _imported(["wol", "wake-node", "1", "--retries", "1"], dict(os.environ))
        assert receiver.recv(200)[6:12] == bytes.fromhex("020000000001")  # the packet went out
    finally:
        receiver.close()
    assert _offenders(imported, NOT_FOR_WAKE) == []
    assert "mko.wol.wake" in imported


def test_the_server_app_imports_no_client_it_only_needs_when_it_connects_out(settings: object) -> None:
    """`mko serve`'s resident memory: notification, SSH and power clients load when first used."""
    code = "import sys; from mko.app import create_app; create_app(); print(' '.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(result.stdout.split())
    assert "mko.app" in loaded and "fastapi" in loaded  # the check is real
    assert _offenders(loaded, ("apprise", "asyncssh", "httpx", "proxmoxer", "pyghmi", "pysnmp")) == []
