"""Input rules shared by API, CLI and web."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mko.platform.errors import InputError
from mko.platform.validation import (
    FreeText,
    InputModel,
    check_text,
    normalize_mac,
    normalize_secureon,
    printable,
    validate_broadcast,
    validate_hostname,
    validate_interface,
    validate_ipv4,
    validate_port,
    validate_ssh_key_path,
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


# --- whole strings, one line, no templates ---------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (validate_ssh_user, "root\n"),
        (validate_ipv4, "127.0.0.9\n"),
        (validate_hostname, "node-1\n"),
        (normalize_mac, "aa:bb:cc:dd:ee:ff\n"),
        (validate_interface, "eth0\n"),
        (validate_broadcast, "10.0.0.255\r"),
    ],
)
def test_a_trailing_newline_is_never_accepted(check: Any, value: str) -> None:
    with pytest.raises(InputError, match=r"U\+000[AD]"):
        check(value, "field")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a\x00b", "U+0000"),
        ("a\x1b[31mred", "U+001B"),
        ("a\x85b", "U+0085"),  # C1 next line
        ("a\u2028b", "U+2028"),  # line separator
        ("abc\u202etxt.exe", "U+202E"),  # right-to-left override
        ("\ud800", "lone surrogate"),
        ("{{ lookup('pipe', 'id') }}", "template delimiters"),
        ("{% if 1 %}", "template delimiters"),
        ("{# comment #}", "template delimiters"),
    ],
)
def test_text_refuses_controls_surrogates_and_templates(value: str, problem: str) -> None:
    with pytest.raises(InputError, match="description") as caught:
        check_text(value, "description")
    assert problem in caught.value.message


def test_text_allows_ordinary_unicode_and_lone_braces() -> None:
    for good in ("Rack 2 – Müller's {spare} node ✓", "a}}b", "100% {x}", "naïve 名前"):
        assert check_text(good, "description") == good
    assert check_text("{{ x }}", "secret", template_ok=True) == "{{ x }}"
    with pytest.raises(InputError, match="at most 10"):
        check_text("x" * 11, "description", max_length=10)


class _Body(InputModel):
    port: int = 22
    ports: list[int] = []
    delay: float | None = None
    flag: bool = False
    name: str = ""
    password: FreeText = ""
    names: list[str] = []


@pytest.mark.parametrize(
    "body",
    [
        {"port": True},
        {"port": False},
        {"ports": [22, True]},
        {"delay": True},
        {"name": "x\ny"},
        {"name": "{{ 7*7 }}"},
        {"names": ["ok", "\x1b]0;title\x07"]},
        {"password": "pass\nword"},
        {"unknown": 1},
    ],
)
def test_input_models_refuse_booleans_as_numbers_and_bad_text(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        _Body.model_validate(body)
    assert caught.value.errors()[0]["loc"][0] == next(iter(body))


def test_input_models_keep_good_values_and_free_text() -> None:
    body = _Body.model_validate({"port": 2222, "flag": True, "password": "{{ not a template }}"})
    assert (body.port, body.flag, body.password) == (2222, True, "{{ not a template }}")


def test_ssh_key_path_rules() -> None:
    for good in ("/etc/mko/id_ed25519", "/home/ops/my keys/id_ed25519", "/root/.ssh/id-rsa_2+x@y"):
        assert validate_ssh_key_path(good) == good
    for bad, reason in [
        ("id_ed25519", "absolute"),
        ("~/.ssh/id_ed25519", "absolute"),
        ("/etc/../root/.ssh/id", "normalised"),
        ("/etc/mko//id", "normalised"),
        ("/etc/mko/", "normalised"),
        ("/etc/mko/./id", "normalised"),
        ("//etc/id", "normalised"),
        ("/etc/$(id)", "must not contain $"),
        ("/etc/%d/id", "must not contain %"),
        ("/etc/`id`", "must not contain `"),
        ('/etc/"x', 'must not contain "'),
        ("/etc/{{ lookup('pipe','id') }}", "template"),
        ("/etc/id\n", "U+000A"),
        ("/" + "a" * 256, "longer than"),
    ]:
        with pytest.raises(InputError, match="ssh_key_path") as caught:
            validate_ssh_key_path(bad)
        assert reason in caught.value.message, (bad, caught.value.message)


def test_interface_names_follow_linux_rules() -> None:
    for good in ("eth0", "enp3s0", "br-1a2b3c4d5e6f", "flannel.1", "vxlan.calico", "a" * 15, "wg_0"):
        assert validate_interface(good) == good
    for bad in ("", ".", "..", "a" * 16, "eth0:1", "eth/0", "eth 0", "-foo", "{{7*7}}", "eth0@if2", "é0"):
        with pytest.raises(InputError, match="wol_interface"):
            validate_interface(bad)


def test_printable_escapes_and_cuts_for_log_lines() -> None:
    assert printable("a\nb\x1b[31m\u2028\\") == "a\\nb\\x1b[31m\\u2028\\\\"
    assert printable("already\\n escaped\n", backslashes=False) == "already\\n escaped\\n"
    assert printable("\ud800") == "\\ud800"
    assert printable("x" * 500, 10) == "x" * 10 + "...[490 more]"
    assert printable("Müller ✓") == "Müller ✓"
