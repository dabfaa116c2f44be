"""A card's Wake-on state as ``ethtool`` reports it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mko.platform.errors import NicError
from mko.ssh.client import SshSession

__all__ = ["ETHTOOL", "EthtoolWol", "parse_ethtool"]


ETHTOOL = "/usr/sbin/ethtool"


_WOL_LINE = re.compile(r"^\s*(Supports Wake-on|Wake-on):\s*(\S*)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class EthtoolWol:
    """What ``ethtool IFACE`` says about Wake-on-LAN (None: the driver reports nothing)."""

    supports: str | None
    wake_on: str | None

    @property
    def magic_capable(self) -> bool:
        """Return whether the card can wake on a magic packet (mode g)."""
        return self.supports is not None and "g" in self.supports

    @property
    def magic_armed(self) -> bool:
        """Return whether a magic packet would wake it now."""
        return self.wake_on is not None and "g" in self.wake_on


def parse_ethtool(text: str) -> EthtoolWol:
    """Return the "Supports Wake-on" and "Wake-on" values of ``ethtool IFACE`` output."""
    values = dict(_WOL_LINE.findall(text))
    return EthtoolWol(values.get("Supports Wake-on"), values.get("Wake-on"))


async def read_wol(session: SshSession, interface: str) -> tuple[EthtoolWol, dict[str, Any]]:
    """Run ``ethtool IFACE`` (as root) and return its Wake-on values and the command record."""
    result = await session.run(["ethtool", interface], sudo=True)
    if not result.ok:
        raise NicError(f"`{result.command}` exited {result.exit_status}: {result.stderr.strip()[-300:]}")
    return parse_ethtool(result.stdout), result.as_dict()
