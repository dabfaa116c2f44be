"""Files mko creates: private modes (0600 files, 0700 directories) and atomic replacement.

The database, its WAL and SHM files, backups, the secrets key, logs and the Ansible inventory hold what an
attacker with a copy could use (password hashes, session hashes, ciphertext beside its key, node
addresses and key paths), so mko creates them readable by their owner only, whatever the umask.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "atomic_file",
    "locked_directory",
    "private_directory",
    "private_sqlite",
    "tighten",
    "touch_private",
    "write_atomic",
]

log = logging.getLogger("mko.files")

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_directory(path: Path) -> Path:
    """Create ``path`` and any missing parents with mode 0700; directories that exist stay as they are
    (they may be shared ones such as the working directory)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it at the same moment
            directory.mkdir(mode=PRIVATE_DIR)
        # mkdir's mode is filtered by the umask; a umask can only take bits away from 0700.
    return path


def tighten(path: Path, mode: int = PRIVATE_FILE) -> bool:
    """Take group and other permissions away from an existing file (or directory) this user owns.

    Returns whether the mode was changed; a file owned by someone else is left alone (and logged).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    current = stat.S_IMODE(info.st_mode)
    excess = current & 0o077 & ~mode
    if not excess:
        return False
    if info.st_uid != os.geteuid():
        log.warning("%s is mode %o and owned by another user; mko leaves it as it is", path, current)
        return False
    os.chmod(path, current & ~excess)
    log.info("%s was mode %o; made it %o (owner only)", path, current, stat.S_IMODE(path.stat().st_mode))
    return True


def touch_private(path: Path) -> None:
    """Create an empty file with mode 0600 unless it exists (then take group/other access away)."""
    private_directory(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        tighten(path)
        return
    os.close(fd)


def private_sqlite(path: Path) -> None:
    """Make a SQLite database file private before SQLite opens it: created 0600 in a 0700 directory,
    or, written by an older mko, its file, WAL, SHM, journal and backups beside it made 0600.

    SQLite creates the -wal and -shm files with the mode of the database file, so they follow.
    """
    touch_private(path)
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(Path(f"{path}{suffix}"))
    for backup in path.parent.glob(f"{path.name}.backup-*"):
        tighten(backup)


def write_atomic(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Replace ``path`` by ``data`` at once: a unique temporary file beside it, fsync, rename.

    Readers see the old or the new content, never a mix, and concurrent writers never share a
    temporary file.
    """
    with atomic_file(path, mode) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = PRIVATE_FILE) -> Iterator[BinaryIO]:
    """Write ``path`` through a handle, as :func:`write_atomic` does: it appears whole (fsync'd, renamed,
    its directory fsync'd) when the block ends, and not at all when the block raises."""
    private_directory(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut once the directory is
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@contextlib.contextmanager
def locked_directory(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a directory (flock): one writer at a time, across processes too."""
    private_directory(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
