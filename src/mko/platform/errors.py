"""The whole error tree of mko: every exception mko raises on purpose is defined here.

Each branch sets the HTTP status (``http_status``) and the CLI exit code (``exit_code``) of everything
under it; a class inherits them unless it says otherwise (the numbers in brackets).

    MkoError                          500 · exit 70  never raised itself: like any other exception, a bug
    ├── InputError                    422 · exit 2   bad input a person can fix; names the field
    ├── NotFoundError                 404 · exit 2   an id that does not exist
    ├── ConflictError                 409 · exit 2   a duplicate, or the current state forbids it
    │   ├── MonitorLockedError                       another process watches these UPSes
    │   └── MigrationRefusedError                    not a database mko may change (nothing was touched)
    ├── AccessError                   403 · exit 77  the caller may not do this
    │   ├── AuthenticationError       (401)          no, invalid, expired or revoked credentials
    │   ├── PermissionDeniedError                    signed in, but the role or the CSRF token refuses it
    │   └── AgentRefusedError                        the orchestrator refused this wake agent
    ├── UnavailableError              503 · exit 69  a peer mko needs does not answer now; retry later
    │   ├── NutError                                 talking to upsd failed
    │   │   ├── NutConnectionError                   upsd unreachable, connection broken or timed out
    │   │   ├── NutProtocolError                     an answer this client does not understand
    │   │   └── NutResponseError                     upsd answered ERR <code>
    │   ├── LabNotUpError                            no lab daemon answers for this directory
    │   └── DatabaseUnavailableError                 the database refuses connections
    ├── ReadOnlySessionError          500 · exit 70  a read route's session was asked to write (a bug)
    ├── PowerError                    502 · exit 1   a power action could not be carried out
    │   ├── FatalPowerError                          bad settings, authentication: never retried
    │   │   ├── UnsupportedActionError  (409)        the node's driver cannot do this at all
    │   │   ├── NicError                             the node's card cannot be read or set
    │   │   ├── HostKeyUnknownError                  (also SshError) no trusted host key yet
    │   │   ├── HostKeyChangedError                  (also SshError) the node presented another key
    │   │   ├── SshAuthError                         (also SshError) the node refused our credentials
    │   │   └── SshCommandError                      (also SshError) a command exited non-zero
    │   ├── RetryablePowerError                      connection refused, timeout: the driver base retries
    │   │   ├── SshUnreachableError                  (also SshError) no connection or login in time
    │   │   └── SshTimeoutError                      (also SshError) a command did not finish in time
    │   └── SshError                                 base of the six SSH failures above
    └── FailedError                   500 · exit 1   a local job mko started failed; the request was fine
        ├── MigrationFailedError                     the message says whether the backup was restored
        ├── BackupError                              no backup could be taken or restored
        ├── LabError                                 the virtual lab could not be built, entered or torn down
        ├── PostgresError                            the lab's PostgreSQL server could not be set up
        └── ScenarioError                            a lab scenario could not be played to its end

Exit codes follow sysexits.h where one fits: 69 is EX_UNAVAILABLE, 70 EX_SOFTWARE, 77 EX_NOPERM.
Adapters translate at the boundary, and only there: ``mko.http.errors`` (JSON), ``mko.web.errors`` (pages)
and ``mko.cli.root`` (one stderr line and the exit code). ``tests/unit/platform/test_error_tree.py`` holds
every class to this drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

__all__ = [
    "COMM_LOSS_CODES",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_NOT_ALLOWED",
    "EXIT_UNAVAILABLE",
    "AccessError",
    "AgentRefusedError",
    "AuthenticationError",
    "BackupError",
    "ConflictError",
    "DatabaseUnavailableError",
    "FailedError",
    "FatalPowerError",
    "HostKeyChangedError",
    "HostKeyUnknownError",
    "InputError",
    "LabError",
    "LabNotUpError",
    "MigrationFailedError",
    "MigrationRefusedError",
    "MkoError",
    "MonitorLockedError",
    "NicError",
    "NotFoundError",
    "NutConnectionError",
    "NutError",
    "NutProtocolError",
    "NutResponseError",
    "PermissionDeniedError",
    "PostgresError",
    "PowerError",
    "ReadOnlySessionError",
    "RetryablePowerError",
    "ScenarioError",
    "SshAuthError",
    "SshCommandError",
    "SshError",
    "SshTimeoutError",
    "SshUnreachableError",
    "UnavailableError",
    "UnsupportedActionError",
]

EXIT_FAILED = 1  # the request was fine; the action or the job failed
EXIT_BAD_INPUT = 2  # usage, input, unknown id, conflict (the seed's scripts rely on 2)
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a peer does not answer; try again later
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug; the traceback is in the log
EXIT_NOT_ALLOWED = 77  # EX_NOPERM


class MkoError(Exception):
    """Base of every error mko raises on purpose; raise a branch, never this class itself."""

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = EXIT_INTERNAL


# --------------------------------------------------------------------------- the request was wrong


class InputError(MkoError):
    """Input a person can correct; ``field`` names what was wrong."""

    http_status = 422
    exit_code = EXIT_BAD_INPUT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(MkoError):
    """An id that does not exist."""

    http_status = 404
    exit_code = EXIT_BAD_INPUT

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} not found")
        self.kind = kind
        self.ident = ident


class ConflictError(MkoError):
    """A duplicate, or an action that the current state forbids."""

    http_status = 409
    exit_code = EXIT_BAD_INPUT


class MonitorLockedError(ConflictError):
    """Another monitor already runs the rules of this database on this host."""


class MigrationRefusedError(ConflictError):
    """The database was not changed: it is not one mko can migrate, or its data cannot be imported."""


# --------------------------------------------------------------------------- the caller may not


class AccessError(MkoError):
    """The caller may not do this."""

    http_status = 403
    exit_code = EXIT_NOT_ALLOWED


class AuthenticationError(AccessError):
    """No, invalid, expired or revoked credentials (the web sends the visitor to the login form)."""

    http_status = 401


class PermissionDeniedError(AccessError):
    """Signed in, but the role (or the form's CSRF token) does not allow this."""


class AgentRefusedError(AccessError):
    """The orchestrator refused this wake agent (its token was refused, or its name is taken)."""


# --------------------------------------------------------------------------- a peer does not answer


class UnavailableError(MkoError):
    """A peer mko needs (upsd, the lab daemon) does not answer now; retrying later can help."""

    http_status = 503
    exit_code = EXIT_UNAVAILABLE


class NutError(UnavailableError):
    """Anything that went wrong talking to upsd."""


class NutConnectionError(NutError):
    """upsd could not be reached, or the connection broke or timed out (transient)."""


class NutProtocolError(NutError):
    """upsd answered something this client does not understand."""


# upsd answers these when it runs but cannot vouch for the UPS's data: the driver is gone or silent.
COMM_LOSS_CODES = frozenset({"DRIVER-NOT-CONNECTED", "DATA-STALE"})


class NutResponseError(NutError):
    """upsd answered ``ERR <code>``: e.g. UNKNOWN-UPS, DRIVER-NOT-CONNECTED, DATA-STALE, ACCESS-DENIED."""

    def __init__(self, code: str, command: str, detail: str = "") -> None:
        super().__init__(f"upsd refused {command}: ERR {code}" + (f" {detail}" if detail else ""))
        self.code = code
        self.command = command

    @property
    def comm_loss(self) -> bool:
        """True when the error means upsd cannot see the UPS (driver down or its data stale)."""
        return self.code in COMM_LOSS_CODES


class LabNotUpError(UnavailableError):
    """No lab daemon answers for this directory."""


class DatabaseUnavailableError(UnavailableError):
    """The database refuses connections (PostgreSQL down, an unreadable SQLite file)."""


# --------------------------------------------------------------------------- a power action failed


class ReadOnlySessionError(MkoError):
    """A session of a read route (``mko.platform.db.session.make_read_session_factory``) was asked to
    flush or commit: the route writes, which it must not; a bug, answered like any other (500)."""

    http_status = 500
    exit_code = EXIT_INTERNAL


class PowerError(MkoError):
    """A power action failed."""

    http_status = 502
    exit_code = EXIT_FAILED


class FatalPowerError(PowerError):
    """Retrying cannot help (bad settings, authentication, missing capability)."""


class UnsupportedActionError(FatalPowerError):
    """The node's power method cannot perform the requested action."""

    http_status = 409


class RetryablePowerError(PowerError):
    """A transient failure (connection, timeout); the driver base retries it."""


class NicError(FatalPowerError):
    """The node's network card could not be read or configured."""


class _SshTarget(Protocol):
    """What an SSH error says about its node (``mko.ssh.client.SshTarget``)."""

    @property
    def label(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def node_id(self) -> int | None: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


def _trust_hint(target: _SshTarget) -> str:
    """How to trust this host: `mko node trust` for a node, else adding its key to mko's known_hosts (a
    host a `command` power driver logs in to)."""
    if target.node_id is not None:
        return f"run `mko node trust {target.node_id}`"
    return (
        f"add its key to mko's known_hosts (MKO_SSH_KNOWN_HOSTS): ssh-keyscan -p {target.port} {target.host}"
    )


class _CommandResult(Protocol):
    """What an SSH command error keeps of the command (``mko.ssh.client.CommandResult``)."""

    @property
    def command(self) -> str: ...
    @property
    def exit_status(self) -> int | None: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...


class SshError(PowerError):
    """Base of SSH failures; ``target`` says which node. Each failure is also fatal or retryable."""

    def __init__(self, target: _SshTarget, message: str) -> None:
        super().__init__(f"{target.label}: {message}")
        self.target = target
        self.reason = message


class SshUnreachableError(SshError, RetryablePowerError):
    """The node could not be reached or did not finish the login in time."""


class SshTimeoutError(SshError, RetryablePowerError):
    """A command did not finish within its timeout."""


class HostKeyUnknownError(SshError, FatalPowerError):
    """No host key is recorded for the node; the operator must trust it first."""

    def __init__(self, target: _SshTarget, presented: str | None) -> None:
        shown = f" (it presents {presented})" if presented else ""
        super().__init__(
            target,
            f"host key of {target.address} is not trusted yet{shown}; check the fingerprint on the node "
            f"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and {_trust_hint(target)}",
        )
        self.presented = presented


class HostKeyChangedError(SshError, FatalPowerError):
    """The node presented a key other than the recorded one: refuse, it may be an impostor."""

    def __init__(self, target: _SshTarget, known: Sequence[str], presented: str | None) -> None:
        super().__init__(
            target,
            f"HOST KEY CHANGED for {target.address}: known {', '.join(known)}, presented "
            f"{presented or 'a key of another type'}; nothing was run. If the node was reinstalled, check "
            f"the new key on its console and run `mko node trust {target.node_id} --replace`",
        )
        self.known = list(known)
        self.presented = presented


class SshAuthError(SshError, FatalPowerError):
    """The node refused our credentials."""


class SshCommandError(SshError, FatalPowerError):
    """A command exited non-zero (only raised with ``check=True``)."""

    def __init__(self, target: _SshTarget, result: _CommandResult) -> None:
        detail = (result.stderr.strip() or result.stdout.strip())[-300:]
        super().__init__(target, f"`{result.command}` exited {result.exit_status}: {detail}")
        self.result = result


# --------------------------------------------------------------------------- a local job failed


class FailedError(MkoError):
    """A local job mko started failed; the request itself was fine."""

    http_status = 500
    exit_code = EXIT_FAILED


class MigrationFailedError(FailedError):
    """The migration was attempted and failed; the message says whether the backup was restored."""


class BackupError(FailedError):
    """No backup could be taken or restored."""


class LabError(FailedError):
    """The virtual lab could not be built, entered or torn down."""


class PostgresError(FailedError):
    """The lab's PostgreSQL server could not be set up."""


class ScenarioError(FailedError):
    """The scenario could not be played to its end (the lab was not ready, or a step never came)."""
