"""Input rules shared by API, CLI and web."""

from __future__ import annotations

import pytest

from mko.errors import InputError
from mko.validation import (
    normalize_mac,
    normalize_secureon,
    validate_broadcast,
    validate_hostname,
    validate_interface,
    validate_ipv4,
    validate_port,
    validate_ssh_user,
)


@pytest.mark.parametrize(
    "given",
    [
        "aa:bb:cc:dd:ee:ff",
        "AA:BB:CC:DD:EE:FF",
        "AA-BB-CC-DD-EE-FF",
        "aabb.ccdd.eeff",
        "AABBCCDDEEFF",
        " aa:bb:cc:dd:ee:ff ",
    ],
)
def test_mac_forms_normalise(given: str) -> None:
    assert normalize_mac(given) == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("aa:bb:cc:dd:ee", "not a MAC"),
        ("aa:bb:cc:dd:ee:fg", "not a MAC"),
        ("aa:bb-cc:dd:ee:ff", "not a MAC"),
        ("aabbccddeeff00", "not a MAC"),
        ("", "not a MAC"),
        ("00:00:00:00:00:00", "all-zero"),
        ("01:00:5e:00:00:01", "multicast"),
        ("ff:ff:ff:ff:ff:ff", "multicast"),
    ],
)
def test_bad_macs_are_rejected_naming_the_field(given: str, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        normalize_mac(given)
    assert caught.value.field == "wol_mac_address"
    assert reason in caught.value.message


def test_secureon_accepts_six_and_four_bytes() -> None:
    assert normalize_secureon("01-02-03-04-05-06") == "01:02:03:04:05:06"
    assert normalize_secureon("c0:a8:01:02") == "c0:a8:01:02"
    assert normalize_secureon("192.168.1.2") == "c0:a8:01:02"
    with pytest.raises(InputError):
        normalize_secureon("01:02:03")


@pytest.mark.parametrize("port", [1, 7, 9, 65535])
def test_ports_in_range(port: int) -> None:
    assert validate_port(port, "wol_port") == port


@pytest.mark.parametrize("port", [0, -1, 65536, 70000, True])
def test_ports_out_of_range(port: int) -> None:
    with pytest.raises(InputError, match="wol_port"):
        validate_port(port, "wol_port")


def test_addresses() -> None:
    assert validate_ipv4(" 10.0.0.5 ") == "10.0.0.5"
    for bad in ("10.0.0.300", "224.0.0.1", "0.0.0.0", "255.255.255.255", "host", "::1"):
        with pytest.raises(InputError):
            validate_ipv4(bad)
    for good in ("255.255.255.255", "10.0.0.255", "192.168.1.20", "127.255.255.255"):
        assert validate_broadcast(good) == good
    for bad in ("0.0.0.0", "239.1.1.1", "127.0.0.1", "10.0.0", "example.org"):
        with pytest.raises(InputError, match="wol_broadcast_address"):
            validate_broadcast(bad)


def test_names() -> None:
    assert validate_hostname("node-1.lab.example") == "node-1.lab.example"
    for bad in ("-node", "node_1", "a b", "x;reboot", "", "a" * 64):
        with pytest.raises(InputError, match="hostname"):
            validate_hostname(bad)
    assert validate_ssh_user("ubuntu") == "ubuntu"
    for bad in ("root;id", "$(id)", "Admin User", ""):
        with pytest.raises(InputError, match="ssh_user"):
            validate_ssh_user(bad)
    assert validate_interface("enp3s0") == "enp3s0"
    for bad in ("eth0 up", "../x", "averyveryverylongname0"):
        with pytest.raises(InputError):
            validate_interface(bad)
