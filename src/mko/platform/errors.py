"""The whole error tree of mko.

    MkoError                      anything mko raises on purpose
    ├── InputError                bad input a person can fix (HTTP 422, CLI exit 2); names the field
    ├── NotFoundError             unknown id (HTTP 404, CLI exit 2)
    ├── ConflictError             duplicate or state conflict (HTTP 409, CLI exit 2)
    └── PowerError                a power action could not be carried out
        ├── FatalPowerError       bad settings, authentication, unsupported: never retried
        │   └── UnsupportedActionError  the node's driver cannot do this at all
        └── RetryablePowerError   connection refused, timeout, transient: retried by the driver base

Adapters translate these at the boundary: ``mko.http.errors`` to HTTP, ``mko.cli`` to exit codes.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "FatalPowerError",
    "InputError",
    "MkoError",
    "NotFoundError",
    "PowerError",
    "RetryablePowerError",
    "UnsupportedActionError",
]


class MkoError(Exception):
    """Base of every error mko raises on purpose."""


class InputError(MkoError):
    """Input a person can correct; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(MkoError):
    """An id that does not exist."""

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} not found")
        self.kind = kind
        self.ident = ident


class ConflictError(MkoError):
    """A duplicate, or an action that the current state forbids."""


class PowerError(MkoError):
    """A power action failed."""


class FatalPowerError(PowerError):
    """Retrying cannot help (bad settings, authentication, missing capability)."""


class UnsupportedActionError(FatalPowerError):
    """The node's power method cannot perform the requested action."""


class RetryablePowerError(PowerError):
    """A transient failure (connection, timeout); the driver base retries it."""
