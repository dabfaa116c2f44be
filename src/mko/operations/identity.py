"""Which ``mko serve`` instance this process is: recorded on the operations it owns and
read by the rules, the UPS monitor and the operation records."""

from __future__ import annotations

import os
import socket

from mko.platform.settings import Settings

__all__ = ["current_instance", "instance_name", "set_current_instance"]


_current: dict[str, str] = {}


def current_instance() -> str | None:
    """Name of the serve instance this process is (None in CLI processes); recorded on operations."""
    return _current.get("name")


def set_current_instance(name: str | None) -> None:
    """Declare which instance this process is (LeaderElection.start does it)."""
    if name is None:
        _current.pop("name", None)
    else:
        _current["name"] = name


def instance_name(settings: Settings) -> str:
    """MKO_INSTANCE_NAME, else ``hostname:pid``."""
    return settings.instance_name or f"{socket.gethostname()}:{os.getpid()}"
