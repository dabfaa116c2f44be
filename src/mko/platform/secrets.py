"""Secrets at rest: Proxmox token secrets and BMC passwords are stored Fernet-encrypted.

The key is either given by settings (``MKO_SECRET_KEY``) or kept in a key file (``MKO_SECRET_KEY_FILE``,
by default ``secret.key`` beside the SQLite database) that is created with mode 0600 on first use.
Plain secrets exist only in memory, for the moment a driver talks to a host; they are never logged,
returned by the API or printed by the CLI (schemas report ``…_set: true`` instead).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from mko.platform.errors import FatalPowerError, InputError
from mko.platform.files import private_directory
from mko.platform.settings import Settings, beside_database, get_settings

__all__ = ["SecretBox", "check_secret_destination", "key_file_path"]

log = logging.getLogger("mko.secrets")

KEY_FILE_NAME = "secret.key"


def key_file_path(settings: Settings, database_url: str | None = None) -> Path:
    """Where the key lives: the configured file, else beside the SQLite database, else data/."""
    if settings.secret_key_file is not None:
        return settings.secret_key_file
    return beside_database(database_url or settings.database_url, KEY_FILE_NAME)


def _load_or_create(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        from cryptography.fernet import Fernet

        private_directory(path.parent)
        key = Fernet.generate_key()
        try:
            # O_EXCL: two processes starting at once must not each write a different key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
        log.info("created a new key for stored secrets in %s (mode 0600)", path)
        return key
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("key file %s is readable by other users; chmod 600 it", path)
    return key


class SecretBox:
    """Encrypts and decrypts stored secrets with one Fernet key."""

    def __init__(self, key: bytes, origin: str = "the configured key") -> None:
        from cryptography.fernet import Fernet  # here: importing mko's modules loads no cryptography

        try:
            self._fernet = Fernet(key)
            self._key = key
        except ValueError:
            raise InputError(
                "secret_key", f"{origin} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
        self._origin = origin

    @classmethod
    def from_settings(cls, settings: Settings, database_url: str | None = None) -> SecretBox:
        """The box for these settings (and this database, when it is not the settings' one); creates
        the key file on first use."""
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value().encode(), "MKO_SECRET_KEY")
        path = key_file_path(settings, database_url)
        return cls(_load_or_create(path), f"the key in {path}")

    @classmethod
    def for_session(cls, session: Session) -> SecretBox:
        """The box for the database this session is bound to (the key lives beside it by default)."""
        return cls.from_settings(get_settings(), session.get_bind().engine.url.render_as_string())

    def derive(self, purpose: str) -> bytes:
        """A key of its own for ``purpose`` (e.g. signing cookies), derived from this one (HMAC-SHA256)."""
        return hmac.new(base64.urlsafe_b64decode(self._key), purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, plain: str) -> str:
        """Ciphertext (a Fernet token) for ``plain``."""
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plain secret; FatalPowerError when the key is not the one it was stored with."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise FatalPowerError(
                f"a stored secret cannot be decrypted with {self._origin}: the key changed since it was"
                " stored; set the secret again"
            ) from None


def check_secret_destination(
    what: str,
    secret: str,
    secret_field: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    reused: bool,
    may_rebind: bool,
    fields: Sequence[str] = (),
) -> None:
    """Refuse to send a stored secret to another place unless it is given again, or an admin asks.

    ``before``/``after``: where the secret goes (address, port, URL, TLS trust...) before and after the
    change, None where it goes nowhere; ``reused``: the stored secret would be used after the change
    (it was not given again in the same request). Without this, someone allowed to change a host's
    address but not to read its secret could point the host at a machine of theirs and have mko send
    the secret there. ``fields`` names what the person changed, for the message.
    """
    if not reused or may_rebind or after is None or dict(after) == dict(before or {}):
        return
    moved = list(fields) or sorted(k for k in after if before is None or before.get(k) != after[k])
    raise InputError(
        secret_field,
        f"changing {', '.join(moved)} of {what} would send its stored {secret} to a new place:"
        f" give the {secret} ({secret_field}) again in the same request, or have an admin make the change",
    )
