"""Validation and normalisation of user input, written once for the API, CLI, web and node facts.

Every string that can reach a sink (the Ansible inventory, an SSH command line, a log line, a web page,
a file path) passes :func:`check_text` first: it must be valid Unicode on one line, without control
characters, Unicode line separators or bidi overrides, and without template delimiters (``{{``, ``{%``,
``{#``) unless the field is free text that no template ever reads (secrets). Request models derive from
:class:`InputModel`, which applies that rule to every string field and refuses ``true``/``false``
where a number is expected; the field checks below then apply whole-string rules (``fullmatch``,
never ``$``, which accepts a trailing newline). Facts reported by nodes go through the same functions.

Sinks still make values inert on their own (the Ansible inventory marks every value unsafe, SSH
commands are argument lists joined with ``shlex.join``, HTML is autoescaped, log lines are escaped by
``mko.platform.logs``): these rules are the second wall, and the one that gives a person a clear error.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import types
import unicodedata
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationInfo, field_validator

from mko.platform.errors import InputError

__all__ = [
    "FREE_TEXT",
    "FreeText",
    "InputModel",
    "check_text",
    "normalize_mac",
    "normalize_secureon",
    "printable",
    "quoted",
    "text_problem",
    "validate_broadcast",
    "validate_hostname",
    "validate_interface",
    "validate_ipv4",
    "validate_port",
    "validate_site",
    "validate_ssh_key_path",
    "validate_ssh_user",
]

#: Annotated marker of a field whose text may hold template delimiters (a password, a secret URL):
#: such values never reach a template, and refusing ``{{`` there would only refuse good passwords.
FREE_TEXT = "mko:free-text"
FreeText = Annotated[str, FREE_TEXT]

_TEMPLATE_OPENERS = ("{{", "{%", "{#")
# Bidi embeddings, overrides and isolates make text display in another order than it is read.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Never part of one line of text: controls (C0, DEL, C1), surrogates, line and paragraph separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
MAX_TEXT = 10_000  # no string field of mko is longer; each field sets its own, smaller limit too

_HEX12 = re.compile(r"[0-9a-f]{12}")
# Separated forms: aa:bb:cc:dd:ee:ff, aa-bb-..., aabb.ccdd.eeff (Cisco), and no separator at all.
_MAC_FORMS = (
    re.compile(
        r"([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})"
    ),
    re.compile(r"([0-9a-f]{4})\.([0-9a-f]{4})\.([0-9a-f]{4})"),
)
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SSH_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# Linux (dev_valid_name, IFNAMSIZ 16): 1-15 bytes, not "." or "..", no "/", ":" or white space. mko
# also keeps to the characters real names use, and no leading "-" (ethtool would read an option):
# names go into unit and file names on the node (mko-wol-IFACE.service) and into ethtool's argv.
_INTERFACE = re.compile(r"(?!-)[A-Za-z0-9_.-]{1,15}")
_SITE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# Characters a key path must not hold: quoted or expanded by OpenSSH (IdentityFile expands %-tokens
# and ${VAR}) or by shells, whatever tool the path is handed to.
_KEY_PATH_SPECIALS = frozenset("\"'\\`$%")
PATH_MAX = 4096
NAME_MAX = 255


# ---------------------------------------------------------------- text


def quoted(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages that name a bad value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def printable(value: object, limit: int = 200, *, backslashes: bool = True) -> str:
    """``value`` as one line of printable text, for log lines and messages.

    Backslashes, control characters, line separators, bidi overrides and lone surrogates are escaped
    (``\\n``, ``\\x1b``, ``\\u2028``), so a value can neither start a forged line nor colour a
    terminal; and the text is cut to ``limit`` characters, saying how much was left out.
    ``backslashes=False`` leaves backslashes as they are (for text escaped once already).
    """
    text = str(value)
    # Fast path (a CLI table prints thousands of cells): str.isprintable() is False for every category
    # and bidi control escaped below (Cc, Cs, Zl, Zp, Cf), so such text comes back as it is.
    if len(text) <= limit and text.isprintable() and not (backslashes and "\\" in text):
        return text
    out: list[str] = []
    size = 0
    for index, char in enumerate(text):
        if char == "\\" and backslashes:
            piece = "\\\\"
        elif unicodedata.category(char) in _BAD_CATEGORIES or char in _BIDI_CONTROLS:
            piece = char.encode("unicode_escape", "backslashreplace").decode("ascii")
            if unicodedata.category(char) == "Cs":
                piece = f"\\u{ord(char):04x}"
        else:
            piece = char
        if size + len(piece) > limit:
            return "".join(out) + f"...[{len(text) - index} more]"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def text_problem(value: str, *, template_ok: bool = False) -> str | None:
    """What makes ``value`` unfit for one line of text (None: nothing)."""
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            return "is not valid Unicode (a lone surrogate)"
        if category in _BAD_CATEGORIES or char in _BIDI_CONTROLS:
            return (
                f"must be one line of printable text (it holds U+{ord(char):04X}; no newline, NUL, escape,"
                " line separator or bidi override)"
            )
    if not template_ok and any(opener in value for opener in _TEMPLATE_OPENERS):
        return "must not contain template delimiters ({{, {% or {#)"
    return None


def check_text(value: str, field: str, *, max_length: int = MAX_TEXT, template_ok: bool = False) -> str:
    """Return ``value`` when it is one line of printable text (see the module docstring), else raise."""
    if not isinstance(value, str):
        raise InputError(field, f"must be text, not {type(value).__name__}")
    if len(value) > max_length:
        raise InputError(field, f"is {len(value)} characters long; at most {max_length}")
    problem = text_problem(value, template_ok=template_ok)
    if problem is not None:
        raise InputError(field, problem)
    return value


def _accepts(annotation: Any, kinds: tuple[type, ...]) -> bool:
    """Whether a field annotation admits one of ``kinds`` (through Optional, unions and Annotated)."""
    if annotation in kinds:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _accepts(get_args(annotation)[0], kinds)
    if origin in (Union, types.UnionType):
        return any(_accepts(arg, kinds) for arg in get_args(annotation))
    return False


def _number_not_bool(annotation: Any) -> bool:
    return _accepts(annotation, (int, float)) and not _accepts(annotation, (bool,))


def _number_items(annotation: Any) -> bool:
    """Whether the annotation is (optionally) a list/set/tuple of numbers that are not booleans."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _number_items(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_number_items(arg) for arg in get_args(annotation))
    if origin in (list, set, frozenset, tuple):
        return any(_number_not_bool(arg) for arg in get_args(annotation) if arg is not Ellipsis)
    return False


class InputModel(BaseModel):
    """Base of every request body: unknown fields refused, every string checked by :func:`check_text`,
    and ``true``/``false`` refused where a number is expected (pydantic would read ``true`` as 1).

    A field annotated ``FreeText`` (or ``Annotated[..., FREE_TEXT]``) may hold template delimiters.
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        if isinstance(value, bool) and _number_not_bool(field.annotation):
            raise ValueError("must be a number, not a boolean")
        is_sequence = isinstance(value, list | tuple)
        if is_sequence and any(isinstance(i, bool) for i in value) and _number_items(field.annotation):
            raise ValueError("must be numbers, not booleans")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _one_line_of_text(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        template_ok = field is not None and FREE_TEXT in field.metadata
        _check_nested(value, template_ok=template_ok)
        return value


def _check_nested(value: Any, *, template_ok: bool) -> None:
    if isinstance(value, SecretStr):
        # Secrets never reach a template; they must still be one line (they go into headers and logins).
        _check_nested(value.get_secret_value(), template_ok=True)
    elif isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"is {len(value)} characters long; at most {MAX_TEXT}")
        problem = text_problem(value, template_ok=template_ok)
        if problem is not None:
            raise ValueError(problem)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _check_nested(item, template_ok=template_ok)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_nested(key, template_ok=template_ok)
            _check_nested(item, template_ok=template_ok)


# ---------------------------------------------------------------- fields


def _mac_digits(value: str) -> str | None:
    text = value.strip(" ").lower()
    if _HEX12.fullmatch(text):
        return text
    for form in _MAC_FORMS:
        match = form.fullmatch(text)
        if match:
            return "".join(g for g in match.groups() if g not in (":", "-"))
    return None


def normalize_mac(value: str, field: str = "wol_mac_address") -> str:
    """Return ``aa:bb:cc:dd:ee:ff`` from any common MAC form; reject invalid, multicast, all-zero."""
    digits = _mac_digits(check_text(value, field, max_length=64))
    if digits is None:
        raise InputError(field, f"{quoted(value)} is not a MAC address (expected e.g. aa:bb:cc:dd:ee:ff)")
    if digits == "0" * 12:
        raise InputError(field, "the all-zero MAC address cannot be woken")
    if int(digits[:2], 16) & 0x01:
        raise InputError(field, f"{quoted(value)} is a multicast/broadcast address, not a network card")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def normalize_secureon(value: str, field: str = "wol_secureon") -> str:
    """Return a SecureOn password as lower-case colon hex: 6 bytes (MAC form) or 4 bytes (IPv4 form)."""
    text = check_text(value, field, max_length=64).strip(" ").lower()
    digits = _mac_digits(text)
    if digits is not None:
        return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    if re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){3}", text):
        return text
    try:
        packed = ipaddress.IPv4Address(text).packed
    except ValueError:
        raise InputError(
            field, "a SecureOn password is 6 bytes (aa:bb:cc:dd:ee:ff) or 4 bytes (aa:bb:cc:dd or 1.2.3.4)"
        ) from None
    return ":".join(f"{b:02x}" for b in packed)


def validate_port(value: int, field: str) -> int:
    """A TCP/UDP port: 1–65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InputError(field, f"{quoted(value)} is not a port (1-65535)")
    return value


def _address(value: str, field: str) -> ipaddress.IPv4Address:
    text = check_text(value, field, max_length=64).strip(" ")
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise InputError(field, f"{quoted(value)} is not an IPv4 address") from None


def validate_ipv4(value: str, field: str = "ip_address") -> str:
    """A unicast IPv4 address in dotted form."""
    address = _address(value, field)
    if address.is_multicast or address.is_unspecified or address == ipaddress.IPv4Address("255.255.255.255"):
        raise InputError(field, f"{quoted(value)} is not a host address")
    return str(address)


def validate_broadcast(value: str, field: str = "wol_broadcast_address") -> str:
    """An IPv4 address a magic packet can be sent to: limited/directed broadcast or a unicast host."""
    address = _address(value, field)
    if (
        address.is_multicast
        or address.is_unspecified
        or (address.is_loopback and str(address) != "127.255.255.255")
    ):
        raise InputError(
            field, f"{quoted(value)} cannot carry a magic packet (multicast, 0.0.0.0 or loopback)"
        )
    return str(address)


def validate_hostname(value: str, field: str = "hostname") -> str:
    """An RFC 1123 host name (labels of letters, digits and hyphens)."""
    text = check_text(value, field, max_length=300).strip(" ")
    if not text or len(text) > 253 or not all(_HOSTNAME_LABEL.fullmatch(label) for label in text.split(".")):
        raise InputError(field, f"{quoted(value)} is not a valid host name")
    return text


def validate_ssh_user(value: str, field: str = "ssh_user") -> str:
    """A POSIX user name: no spaces, quotes or shell metacharacters."""
    if not _SSH_USER.fullmatch(check_text(value, field, max_length=64)):
        raise InputError(field, f"{quoted(value)} is not a valid user name")
    return value


def validate_interface(value: str, field: str = "wol_interface") -> str:
    """A Linux network interface name: 1-15 of letters, digits, ``_ . -`` (not first), not . or .."""
    if not _INTERFACE.fullmatch(check_text(value, field, max_length=64)) or value in (".", ".."):
        raise InputError(
            field,
            f"{quoted(value)} is not a network interface name"
            " (1-15 letters, digits, '_', '.', '-'; not starting with '-')",
        )
    return value


def validate_ssh_key_path(value: str, field: str = "ssh_key_path") -> str:
    """The private key file mko and Ansible log in with, as a plain absolute path.

    Absolute and normalised (no ``.``/``..`` components, no ``//``, no trailing ``/``), within Linux's
    PATH_MAX and NAME_MAX, printable, and without characters that OpenSSH or a shell would quote or
    expand (``" ' \\ ` $ %``). It is not required to exist yet: the key may be installed later, and an
    operator should not learn which files exist on mko's machine.
    """
    text = check_text(value, field, max_length=PATH_MAX)
    if not text.startswith("/"):
        raise InputError(field, f"{quoted(value)} is not an absolute path (it must start with /)")
    if posixpath.normpath(text) != text or text.startswith("//"):
        raise InputError(field, f"{quoted(value)} is not a normalised path (no ., .., // or trailing /)")
    if len(text.encode()) >= PATH_MAX or any(len(part.encode()) > NAME_MAX for part in text.split("/")):
        raise InputError(field, "is longer than a Linux path can be")
    special = sorted({c for c in text if c in _KEY_PATH_SPECIALS})
    if special:
        raise InputError(
            field, f"must not contain {' '.join(special)} (OpenSSH and shells quote or expand them)"
        )
    return text


def validate_site(value: str, field: str = "site") -> str | None:
    """A wake-agent site name (letters, digits, . _ -; at most 64), lower-cased; blank means none."""
    text = check_text(value, field, max_length=100).strip(" ").lower()
    if not text:
        return None
    if not _SITE.fullmatch(text):
        raise InputError(field, f"{quoted(value)} is not a site name (letters, digits, . _ -; at most 64)")
    return text
