"""What a copy of mko's files gives away: no working session cookie, no SecureOn password in clear, and
no file readable by other users in the first place."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.access.sessions import session_principal
from mko.access.users import create_user
from mko.app import create_app
from mko.cli.root import app
from mko.inventory.nodes import create_node
from mko.inventory.schemas import NodeCreate
from mko.platform.db.backup import backup_database
from mko.platform.db.migrate import alembic_config, current_revision, head_revision
from mko.platform.db.models.access import Role, WebSession
from mko.platform.db.models.inventory import Node
from mko.platform.db.session import make_engine
from mko.platform.db.upgrade import upgrade
from mko.platform.secrets import SecretBox
from mko.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MKO = Path(sys.executable).parent / "mko"
SECUREON = "01:02:03:04:05:06"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_web_session_ids_are_stored_hashed(settings: Settings, session: Session) -> None:
    create_user(session, settings, "ann", "correct-horse", Role.OPERATOR)
    application = create_app(settings)
    with TestClient(application) as browser:
        signed_in = browser.post("/login", data={"username": "ann", "password": "correct-horse"})
        assert signed_in.status_code == 200
        cookie = browser.cookies["mko_session"]
        [stored] = session.scalars(select(WebSession)).all()
        assert stored.id == hashlib.sha256(cookie.encode()).hexdigest() != cookie
        assert browser.get("/api/me").json()["name"] == "ann"
        # What a stolen copy of the database holds is not a cookie that works.
        browser.cookies.clear()
        browser.cookies.set("mko_session", stored.id)
        assert browser.get("/api/me").status_code == 401
        browser.cookies.set("mko_session", "x" * 5000)
        assert browser.get("/api/me").status_code == 401
    application.state.engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


LEGACY_ROWS = [
    "INSERT INTO users (username, password_hash, role, disabled, created_at)"
    " VALUES ('ann', 'x', 'admin', 0, '2026-01-01')",
    "INSERT INTO web_sessions (id, user_id, csrf_token, expires_at, created_at)"
    " VALUES ('old-cookie', 1, 'csrf', '2999-01-01', '2026-01-01')",
    "INSERT INTO nodes (hostname, ip_address, ssh_user, ssh_port, role, description, created_at,"
    " wol_enabled, wol_method, wol_port, is_virtual_node, wol_secureon, cordoned_by_mko, bmc_verify_tls,"
    " wol_mac_address) VALUES ('n1', '10.0.0.1', 'ubuntu', 22, 'worker', '', '2026-01-01', 1, 'ethernet',"
    " 9, 0, :so, 0, 1, '02:00:00:00:00:01')",
]


def test_migration_hashes_sessions_and_encrypts_secureon_in_place(settings: Settings) -> None:
    url = settings.database_url
    engine = make_engine(url)
    upgrade(engine, "0013")
    with engine.begin() as connection:
        for statement in LEGACY_ROWS:
            connection.execute(text(statement), {"so": SECUREON})
    upgrade(engine)
    with Session(engine) as session:
        # The session survives the upgrade: its cookie is looked up by hash now.
        principal = session_principal(session, "old-cookie")
        assert principal is not None and principal.name == "ann"
        stored = session.get_one(Node, 1).power_params["wol_secureon"]["fernet"]
        assert stored and SECUREON not in stored
        assert SecretBox.for_session(session).decrypt(stored) == SECUREON
    engine.dispose()
    database = Path(url.removeprefix("sqlite:///"))
    assert SECUREON.encode() not in database.read_bytes()
    assert b"old-cookie" not in database.read_bytes()
    # Down to 0013: the password decrypted back, every session ended (a hash cannot become a cookie).
    _downgrade(url, "0013")
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT wol_secureon FROM nodes")).scalar_one() == SECUREON
        assert connection.execute(text("SELECT count(*) FROM web_sessions")).scalar_one() == 0
    upgrade(engine)
    engine.dispose()


def test_secureon_is_encrypted_and_never_shown(
    settings: Settings, session: Session, client: TestClient, cli: CliRunner
) -> None:
    created = client.post(
        "/api/nodes",
        json={"hostname": "n1", "ip_address": "10.0.0.1", "wol_mac_address": "02:00:00:00:00:01"},
    )
    node_id = created.json()["id"]
    configured = client.put(f"/api/nodes/{node_id}/wol/configure", json={"wol_secureon": "01-02-03-04-05-06"})
    assert configured.status_code == 200 and configured.json()["wol_secureon_set"] is True
    session.expire_all()
    stored = session.get_one(Node, node_id).power_params["wol_secureon"]["fernet"]
    assert stored and SecretBox.for_session(session).decrypt(stored) == SECUREON
    shown = [
        configured.text,
        client.get(f"/api/nodes/{node_id}").text,
        client.get("/api/nodes").text,
        client.get(f"/api/nodes/{node_id}/wol/status").text,
        client.get("/api/operations").text,
        cli.invoke(app, ["node", "show", str(node_id), "--json"]).stdout,
        cli.invoke(app, ["wol", "status", str(node_id), "--json"]).stdout,
    ]
    for text_shown in shown:
        assert SECUREON not in text_shown and "01-02-03-04-05-06" not in text_shown
    assert settings.log_file.exists() is False or SECUREON not in settings.log_file.read_text()
    # Cleared with null, like the BMC password.
    cleared = client.put(f"/api/nodes/{node_id}/wol/configure", json={"wol_secureon": None})
    assert cleared.json()["wol_secureon_set"] is False


@pytest.fixture
def umask_022() -> object:
    old = os.umask(0o022)
    yield None
    os.umask(old)


def test_files_mko_creates_are_private_whatever_the_umask(
    tmp_path: Path, umask_022: object, settings: Settings
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKO_")} | {"MKO_CONFIG": "/nonexistent"}

    def mko(*args: str) -> str:
        done = subprocess.run(
            [str(MKO), *args], cwd=home, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    mko("db", "upgrade")
    mko("node", "add", "n1", "10.0.0.1", "--mac", "02:00:00:00:00:01")
    mko("wol", "configure", "1", "--secureon", SECUREON)  # creates the key file
    mko("ansible", "inventory")
    data, logs = home / "data", home / "logs"
    database = data / "orchestrator.db"
    assert (mode(data), mode(logs)) == (0o700, 0o700)
    assert mode(database) == mode(data / "secret.key") == mode(logs / "orchestrator.log") == 0o600
    assert mode(home / "ansible/inventory/dynamic_inventory.ini") == 0o700
    # WAL and SHM, while a writer has them open, have the database's mode.
    engine = make_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        connection.execute(text("UPDATE nodes SET description = 'x'"))
        assert mode(Path(f"{database}-wal")) == mode(Path(f"{database}-shm")) == 0o600
        backup = backup_database(f"sqlite:///{database}", data / "backups")
    engine.dispose()
    assert mode(backup) == 0o600 and mode(backup.parent) == 0o700
    # A database and log an older mko left readable by everyone are made private on the next upgrade.
    database.chmod(0o644)
    (logs / "orchestrator.log").chmod(0o644)
    mko("db", "upgrade")
    assert mode(database) == mode(logs / "orchestrator.log") == 0o600
    assert json.loads(mko("node", "list", "--json"))[0]["hostname"] == "n1"
    assert current_revision(make_engine(f"sqlite:///{database}")) == head_revision()
    chain = [r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
    assert "0014" in chain  # the at-rest revision is part of what the upgrade ran


def test_in_process_engine_creates_a_private_database(tmp_path: Path, umask_022: object) -> None:
    database = tmp_path / "new" / "dir" / "x.db"
    engine = make_engine(f"sqlite:///{database}")
    upgrade(engine)
    with Session(engine) as session:
        create_node(session, NodeCreate(hostname="n", ip_address="10.0.0.2"))
    engine.dispose()
    assert mode(database) == 0o600
    assert mode(database.parent) == mode(database.parent.parent) == 0o700
