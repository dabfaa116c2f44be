"""Reading a node's host key without trusting it: scan, fingerprint, status."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mko.platform.settings import Settings

if TYPE_CHECKING:
    import asyncssh
from mko.platform.errors import SshUnreachableError
from mko.ssh.client import SshTarget, _describe, _presented_key
from mko.ssh.known_hosts import KnownHosts, fingerprint

__all__ = ["HostKeyInfo", "scan_host_key"]


@dataclass(frozen=True)
class HostKeyInfo:
    """The key a node presents and how it compares with what is recorded."""

    target: SshTarget
    key: asyncssh.SSHKey
    recorded: list[str]

    @property
    def fingerprint(self) -> str:
        """Return the presented key's fingerprint."""
        return fingerprint(self.key)

    @property
    def status(self) -> str:
        """Return "trusted", "unknown" or "changed"."""
        if not self.recorded:
            return "unknown"
        return "trusted" if self.fingerprint in self.recorded else "changed"

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form the API and CLI show."""
        return {
            "node_id": self.target.node_id,
            "hostname": self.target.name,
            "address": self.target.address,
            "key_type": self.key.get_algorithm(),
            "fingerprint": self.fingerprint,
            "status": self.status,
            "recorded": self.recorded,
        }


async def scan_host_key(target: SshTarget, settings: Settings) -> HostKeyInfo:
    """Ask the node for its host key (no login) and compare it with known_hosts."""
    import asyncssh

    known = KnownHosts(settings.ssh_known_hosts)
    recorded_keys = known.keys_for(target.host, target.port)
    # Prefer the algorithm already recorded, so a host with several keys is compared like for like.
    algs = sorted({k.get_algorithm() for k in recorded_keys}) or ()
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(
                target.host, target.port, config=None, server_host_key_algs=algs or ()
            ),
            settings.ssh_connect_timeout,
        )
        if key is None and algs:
            key = await _presented_key(target, settings)
    except asyncssh.KeyExchangeFailed:
        key = await _presented_key(target, settings)
    except TimeoutError:
        raise SshUnreachableError(
            target, f"no SSH answer from {target.address} within {settings.ssh_connect_timeout:g} s"
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise SshUnreachableError(target, f"cannot connect to {target.address}: {_describe(exc)}") from None
    if key is None:
        raise SshUnreachableError(target, f"{target.address} presented no host key")
    return HostKeyInfo(target, key, [fingerprint(k) for k in recorded_keys])


_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")


def _sha256_part(text: str) -> str:
    parts = text.strip().split()
    return parts[-1] if parts else ""
