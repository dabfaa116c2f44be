"""mko's known_hosts file: host names as OpenSSH writes them, fingerprints, adding and
replacing a node's key (pure file handling)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncssh

__all__ = ["KnownHosts", "fingerprint", "known_hosts_name"]


def known_hosts_name(host: str, port: int) -> str:
    """Return how OpenSSH names host:port in known_hosts (``host`` for 22, else ``[host]:port``)."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    """Return ``ssh-ed25519 SHA256:…``, as ``ssh-keygen -lf`` shows it."""
    return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"


class KnownHosts:
    """The orchestrator's known_hosts file: read for every connection, changed only by trust()."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> asyncssh.SSHKnownHosts:
        """Return the parsed file (empty when it does not exist yet)."""
        import asyncssh

        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        return asyncssh.import_known_hosts(text)

    def keys_for(self, host: str, port: int) -> list[asyncssh.SSHKey]:
        """Return the keys recorded for host:port."""
        import asyncssh

        keys, *_ = asyncssh.match_known_hosts(self.load(), host, host, port)
        # The same line matches both as host name and as address: keep each key once.
        unique: dict[bytes, asyncssh.SSHKey] = {}
        for key in keys:
            unique.setdefault(key.public_data, key)
        return list(unique.values())

    def trust(self, host: str, port: int, key: asyncssh.SSHKey, *, replace: bool) -> None:
        """Record KEY for host:port; with ``replace`` first forget every key recorded for it."""
        name = known_hosts_name(host, port)
        line = f"{name} {key.export_public_key('openssh').decode().strip()}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            # Two trusts at once (CLI and API) must not lose each other's lines.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                lines = self.path.read_text().splitlines(keepends=True)
            except FileNotFoundError:
                lines = []
            if replace:
                lines = [kept for entry in lines if (kept := _without_name(entry, name))]
            lines = [entry if entry.endswith("\n") else entry + "\n" for entry in lines]
            lines.append(line)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text("".join(lines))
            tmp.chmod(0o644)
            os.replace(tmp, self.path)


def _without_name(entry: str, name: str) -> str:
    """Return a known_hosts line with NAME removed from its host list ("" when nothing remains)."""
    stripped = entry.strip()
    if not stripped or stripped.startswith("#"):
        return entry
    fields = stripped.split()
    marker = fields.pop(0) if fields[0].startswith("@") else None
    names = fields[0].split(",")
    if name not in names:
        return entry
    names.remove(name)
    if not names:
        return ""
    return " ".join(([marker] if marker else []) + [",".join(names)] + fields[1:]) + "\n"
