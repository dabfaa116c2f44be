"""Every registered driver keeps the plugin contract: its settings model, capabilities and primitives."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mko.power.base import Capability, PowerDriver
from mko.power.params import EncryptedSecret, meta_of, stored_value
from mko.power.registry import DRIVERS

NAMES = DRIVERS.names()


@pytest.mark.parametrize("name", NAMES)
def test_driver_declares_its_name_settings_and_capabilities(name: str) -> None:
    driver = DRIVERS.driver(name)
    assert driver.name == name
    assert driver.capabilities and Capability.ON in driver.capabilities | {Capability.ON}
    # A driver that says it can read the power state has its own query; one that can switch off, _off.
    if Capability.QUERY in driver.capabilities and Capability.WAKE_ONLY not in driver.capabilities:
        assert driver.query is not PowerDriver.query
    if driver.capabilities & {Capability.OFF, Capability.SOFT_OFF}:
        assert driver._off is not PowerDriver._off
    if Capability.CYCLE in driver.capabilities:
        assert driver._cycle is not PowerDriver._cycle
    if Capability.ON in driver.capabilities:
        assert driver._on is not PowerDriver._on or driver.send_on is not PowerDriver.send_on


def test_a_field_name_means_one_thing_across_drivers() -> None:
    seen: dict[str, tuple[object, str, bool, bool]] = {}
    for name in NAMES:
        params = DRIVERS.params(name)
        for field, info in params.model_fields.items():
            meta = meta_of(params, field)
            shape = (info.annotation, meta.help, meta.secret, meta.column)
            assert seen.setdefault(field, shape) == shape, f"{field} differs in {name}"


@pytest.mark.parametrize("name", NAMES)
def test_settings_round_trip_through_storage_with_secrets_as_ciphertext(name: str) -> None:
    params = DRIVERS.params(name)
    values = {field: EncryptedSecret("gAAAA-token") for field in params.secret_fields()}
    model = params.model_validate({k: stored_value(v) for k, v in values.items()})
    for field in params.secret_fields():
        secret = getattr(model, field)
        assert isinstance(secret, EncryptedSecret) and repr(secret) == "'***'"
        assert stored_value(secret) == {"fernet": "gAAAA-token"}


def test_with_capability_replaces_the_magic_packet_lists() -> None:
    assert DRIVERS.with_capability(Capability.WAKE_ONLY) == {"ethernet", "ethernet-raw"}


def test_reading_the_settings_imports_no_heavy_client() -> None:
    code = (
        "import sys\n"
        "from mko.power.registry import DRIVERS\n"
        "DRIVERS.all_params_fields()\n"
        "heavy = [m for m in ('pyghmi', 'proxmoxer', 'pysnmp', 'asyncssh', 'httpx') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
