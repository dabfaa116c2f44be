"""SSH to nodes (asyncssh): verified host keys, argument-list commands, timeouts everywhere.

The one SSH layer of mko; MAC collection, NIC Wake-on-LAN and graceful shutdown all use it::

    target = SshTarget.of(node, settings)
    async with ssh.connect(target, settings) as session:
        result = await session.run(["ip", "-j", "link", "show"])
        await session.run(["ethtool", "-s", "eth0", "wol", "g"], sudo=True, check=True)

Host keys are checked against the orchestrator's known_hosts file (``settings.ssh_known_hosts``,
OpenSSH format, so Ansible verifies against the same file). Nothing is ever trusted on first use: an
unknown key fails with :class:`HostKeyUnknownError` until the operator runs ``mko node trust ID``
(:func:`trust_node`), which shows the fingerprint; a key that differs from the recorded one fails with
:class:`HostKeyChangedError` naming the node and both fingerprints.

Commands are argument lists joined with :func:`shlex.join` for the remote shell, so no value from the
database or a request is ever parsed as shell syntax.

Errors (all :class:`mko.platform.errors.PowerError`, so the API answers 502 and the CLI exits 1)::

    SshError
    ├── SshUnreachableError   refused, no route, connect/login timeout        (retryable)
    ├── SshTimeoutError       a command ran longer than its timeout           (retryable)
    ├── HostKeyUnknownError   no key recorded for host:port                   (fatal)
    ├── HostKeyChangedError   the node presented a different key              (fatal)
    ├── SshAuthError          the node refused our key                        (fatal)
    └── SshCommandError       a command run with check=True exited non-zero   (fatal)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mko.platform.settings import Settings

if TYPE_CHECKING:
    import asyncssh
from mko.platform.errors import (
    HostKeyChangedError,
    HostKeyUnknownError,
    SshAuthError,
    SshCommandError,
    SshTimeoutError,
    SshUnreachableError,
)
from mko.ssh.known_hosts import KnownHosts, fingerprint

__all__ = ["CommandResult", "SshSession", "SshTarget", "connect"]

log = logging.getLogger("mko.ssh")
# asyncssh logs every connection and channel at INFO; mko logs what matters itself.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

_OUTPUT_KEEP = 4000  # characters of stdout/stderr kept in operation steps


class _NodeLike(Protocol):
    id: int
    hostname: str
    ip_address: str
    ssh_port: int
    ssh_user: str
    ssh_key_path: str | None


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to log in; built from a node with :meth:`of`."""

    node_id: int | None
    name: str
    host: str
    port: int = 22
    user: str = "root"
    key_path: str | None = None

    @classmethod
    def of(cls, node: _NodeLike, settings: Settings) -> SshTarget:
        """Return the target of a node row: its IP, SSH port, user and key (or the default key)."""
        key = node.ssh_key_path or (str(settings.ssh_default_key) if settings.ssh_default_key else None)
        return cls(node.id, node.hostname, node.ip_address, node.ssh_port, node.ssh_user, key)

    @property
    def label(self) -> str:
        """Return ``node 3 (worker-1)`` for messages."""
        return f"node {self.node_id} ({self.name})" if self.node_id is not None else self.name

    @property
    def address(self) -> str:
        """Return ``host:port``."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def command(self) -> str:
        """Return the command line exactly as the remote shell received it."""
        return shlex.join(self.argv)

    @property
    def ok(self) -> bool:
        """Return whether it exited 0."""
        return self.exit_status == 0

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able record for operation steps (output tails only)."""
        return {
            "command": self.command,
            "exit_status": self.exit_status,
            "stdout": self.stdout[-_OUTPUT_KEEP:],
            "stderr": self.stderr[-_OUTPUT_KEEP:],
            "duration": round(self.duration, 3),
        }


def _client_factory() -> Any:
    """Return an SSHClient that remembers the host key the server presented when it was not trusted."""
    import asyncssh

    class Client(asyncssh.SSHClient):
        presented: asyncssh.SSHKey | None = None

        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            """Record the key and refuse it: only keys in known_hosts are accepted."""
            self.presented = key
            return False

    return Client()


@dataclass
class SshSession:
    """An open, verified connection to one node."""

    target: SshTarget
    settings: Settings
    connection: asyncssh.SSHClientConnection
    history: list[CommandResult] = field(default_factory=list)

    def _argv(self, argv: Sequence[str], sudo: bool) -> tuple[str, ...]:
        if not argv:
            raise ValueError("empty command")
        # A non-root user needs passwordless sudo for privileged commands; -n fails instead of asking.
        prefix = ("sudo", "-n", "--") if sudo and self.target.user != "root" else ()
        return (*prefix, *(str(a) for a in argv))

    async def run(
        self,
        argv: Sequence[str],
        *,
        sudo: bool = False,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run one command (an argument list) and return its result; SshTimeoutError after TIMEOUT s."""
        full = self._argv(argv, sudo)
        command = shlex.join(full)
        limit = timeout if timeout is not None else self.settings.ssh_command_timeout
        started = time.monotonic()
        log.debug("%s: run %s", self.target.label, command)
        import asyncssh

        try:
            completed = await self.connection.run(
                command, input=input, timeout=limit, check=False, encoding="utf-8", errors="replace"
            )
        except (asyncssh.TimeoutError, TimeoutError):
            raise SshTimeoutError(self.target, f"`{command}` did not finish within {limit:g} s") from None
        except (asyncssh.Error, OSError) as exc:
            raise SshUnreachableError(self.target, f"`{command}` failed: {_describe(exc)}") from None
        status = completed.exit_status
        if status is None:  # killed by a signal
            status = 128 + 15 if completed.exit_signal else 255
        result = CommandResult(
            argv=full,
            exit_status=status,
            stdout=str(completed.stdout or ""),
            stderr=str(completed.stderr or ""),
            duration=time.monotonic() - started,
        )
        self.history.append(result)
        if check and not result.ok:
            raise SshCommandError(self.target, result)
        return result

    async def copy_out(
        self,
        argv: Sequence[str],
        write: Callable[[bytes], object],
        *,
        sudo: bool = False,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run a command and hand its stdout, as bytes, to WRITE (e.g. ``cat FILE`` of a binary file).

        The result's ``stdout`` says how many bytes were written; stderr is kept as text.
        """
        full = self._argv(argv, sudo)
        command = shlex.join(full)
        limit = timeout if timeout is not None else self.settings.ssh_command_timeout
        started = time.monotonic()
        import asyncssh

        written = 0

        async def pump() -> tuple[int | None, str]:
            nonlocal written
            async with self.connection.create_process(command, encoding=None) as process:
                process.stdin.write_eof()
                errors = asyncio.ensure_future(process.stderr.read())
                while chunk := await process.stdout.read(65536):
                    await asyncio.to_thread(write, chunk)
                    written += len(chunk)
                await process.wait()
                return process.exit_status, (await errors).decode(errors="replace")

        try:
            status, stderr = await asyncio.wait_for(pump(), limit)
        except TimeoutError:
            raise SshTimeoutError(self.target, f"`{command}` did not finish within {limit:g} s") from None
        except (asyncssh.Error, OSError) as exc:
            raise SshUnreachableError(self.target, f"`{command}` failed: {_describe(exc)}") from None
        result = CommandResult(
            argv=full,
            exit_status=255 if status is None else status,
            stdout=f"{written} bytes",
            stderr=stderr,
            duration=time.monotonic() - started,
        )
        self.history.append(result)
        return result


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _client_keys(target: SshTarget) -> dict[str, Any]:
    if target.key_path:
        # An explicit key is the only one offered; the agent and ~/.ssh keys stay out of it.
        return {"client_keys": [target.key_path], "agent_path": None}
    return {}


async def _presented_key(target: SshTarget, settings: Settings) -> asyncssh.SSHKey | None:
    """Fetch the key the server offers when the verified handshake could not tell us."""
    import asyncssh

    with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
        return await asyncio.wait_for(
            asyncssh.get_server_host_key(target.host, target.port, config=None),
            settings.ssh_connect_timeout,
        )
    return None


@contextlib.asynccontextmanager
async def connect(target: SshTarget, settings: Settings) -> AsyncIterator[SshSession]:
    """Open a verified connection to TARGET; raise an :class:`SshError` subclass on any failure."""
    import asyncssh

    known = KnownHosts(settings.ssh_known_hosts)
    trusted = known.load()
    client = _client_factory()
    timeout = settings.ssh_connect_timeout
    try:
        connection = await asyncio.wait_for(
            asyncssh.connect(
                target.host,
                target.port,
                username=target.user,
                known_hosts=trusted,
                client_factory=lambda: client,
                connect_timeout=timeout,
                login_timeout=timeout,
                config=None,
                **_client_keys(target),
            ),
            timeout + 1,
        )
    except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed) as exc:
        recorded = [fingerprint(k) for k in known.keys_for(target.host, target.port)]
        presented = client.presented or await _presented_key(target, settings)
        shown = fingerprint(presented) if presented is not None else None
        if recorded:
            log.error("%s: host key mismatch: known %s, presented %s", target.label, recorded, shown)
            raise HostKeyChangedError(target, recorded, shown) from None
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            raise HostKeyUnknownError(target, shown) from None
        raise SshUnreachableError(target, f"key exchange failed: {_describe(exc)}") from None
    except asyncssh.PermissionDenied:
        key = f" with key {target.key_path}" if target.key_path else " with the default keys"
        raise SshAuthError(target, f"{target.user}@{target.address} refused the login{key}") from None
    except (TimeoutError, asyncssh.ConnectionLost) as exc:
        raise SshUnreachableError(
            target, f"no SSH answer from {target.address} within {timeout:g} s ({_describe(exc)})"
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise SshUnreachableError(target, f"cannot connect to {target.address}: {_describe(exc)}") from None
    try:
        yield SshSession(target, settings, connection)
    finally:
        connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.wait_closed(), 5)
