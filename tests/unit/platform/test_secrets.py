"""Secrets at rest: a 0600 key file made once, Fernet ciphertext in the database, clear errors."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy.orm import Session

from mko.inventory.clusters import create_cluster
from mko.inventory.nodes import configure_wol, create_node
from mko.inventory.schemas import ClusterCreate, NodeCreate, WolConfigure
from mko.operations.records import Actor
from mko.platform.errors import FatalPowerError, InputError
from mko.platform.secrets import SecretBox, key_file_path
from mko.platform.settings import Settings


def test_key_file_created_0600_beside_the_database_once(settings: Settings) -> None:
    path = key_file_path(settings)
    assert path == Path(str(settings.database_url).removeprefix("sqlite:///")).parent / "secret.key"
    assert not path.exists()
    box = SecretBox.from_settings(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    token = box.encrypt("s3cret-value")
    assert "s3cret-value" not in token
    # A second process reads the same key rather than making a new one.
    again = SecretBox.from_settings(settings)
    assert again.decrypt(token) == "s3cret-value"
    assert path.read_bytes() == key


def test_key_given_by_settings_and_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    given = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", secret_key=SecretStr(key))
    token = SecretBox.from_settings(given).encrypt("pw")
    assert not (tmp_path / "secret.key").exists()
    other = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", secret_key_file=tmp_path / "other.key")
    with pytest.raises(FatalPowerError, match="key changed"):
        SecretBox.from_settings(other).decrypt(token)
    with pytest.raises(InputError, match="not a Fernet key"):
        SecretBox.from_settings(Settings(secret_key=SecretStr("short")))


def test_bmc_password_is_stored_encrypted_and_write_only(settings: Settings, session: Session) -> None:
    cluster = create_cluster(session, ClusterCreate(name="c"))
    node = create_node(session, NodeCreate(hostname="bmc-node", ip_address="10.0.0.9", cluster_id=cluster.id))
    configure_wol(
        session,
        node.id,
        WolConfigure(
            wol_method="ipmi", bmc_address="10.0.0.99", bmc_username="admin", bmc_password="hunter2-ipmi"
        ),
        Actor.cli(),
    )
    stored = session.connection().exec_driver_sql("SELECT power_params FROM nodes").scalar_one()
    raw = json.loads(stored)["bmc_password"]["fernet"]
    assert raw and "hunter2-ipmi" not in raw
    assert SecretBox.from_settings(settings).decrypt(raw) == "hunter2-ipmi"
    # Without a password IPMI is refused at configure time, naming the field.
    other = create_node(session, NodeCreate(hostname="n2", ip_address="10.0.0.8"))
    with pytest.raises(InputError) as refused:
        configure_wol(
            session,
            other.id,
            WolConfigure(wol_method="ipmi", bmc_address="10.0.0.98", bmc_username="a"),
            Actor.cli(),
        )
    assert refused.value.field == "bmc_password"
