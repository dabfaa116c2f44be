"""Commands: power a node by running a program, on mko's own host or over SSH on another host.

Each action is an argument vector, never a shell line: locally it is executed directly
(``asyncio.create_subprocess_exec``), over SSH it is quoted word by word with :func:`shlex.join` for the
remote shell, so no value is ever parsed as shell syntax. SSH verifies the host's key against mko's
known_hosts (``MKO_SSH_KNOWN_HOSTS``); an unknown key is refused, never trusted on first use.

On and off succeed when the program exits 0; exit 75 (EX_TEMPFAIL) is retried; any other exit is
fatal, with the tail of its output. The status program's output is matched with the on regex, then the
off regex; without regexes its exit code decides: 0 on, 1 off, anything else unknown.

Example: a NAS woken through its neighbour's ``ipmitool`` over SSH::

    mko wol configure 15 --method command \\
      --command-on-argv 'ipmitool -I lanplus -H 10.0.0.40 -U admin -E chassis power on' \\
      --command-status-argv 'ipmitool -I lanplus -H 10.0.0.40 -U admin -E chassis power status' \\
      --command-on-regex 'is on' --command-off-regex 'is off' \\
      --command-ssh-host jump.lan --command-ssh-user mko --command-ssh-key-path /root/.ssh/id_ed25519
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mko.platform.errors import FatalPowerError, InputError, RetryablePowerError
from mko.platform.validation import check_text, validate_port, validate_ssh_key_path, validate_ssh_user
from mko.power.base import Capability, NodeSnapshot, PowerDriver, PowerState
from mko.power.fields import integer_range, validate_host, validate_regex
from mko.power.params import DriverParams, param

if TYPE_CHECKING:
    from mko.platform.settings import Settings

__all__ = ["CommandDriver", "CommandParams", "parse_argv"]

EX_TEMPFAIL = 75
_KEEP = 300  # characters of output kept in messages


def parse_argv(value: Any, field: str) -> list[str]:
    """An argument vector: a JSON list of strings, or one line split like a shell would split words
    (quotes group words; nothing is expanded or run)."""
    if isinstance(value, str):
        try:
            words = shlex.split(check_text(value, field, max_length=4000))
        except ValueError as exc:
            raise InputError(field, f"cannot split into arguments: {exc}") from None
    elif isinstance(value, list | tuple) and all(isinstance(word, str) for word in value):
        words = [check_text(word, field, max_length=2000) for word in value]
    else:
        raise InputError(field, "expected a list of strings (or one line of words)")
    if not words or not words[0]:
        raise InputError(field, "the command is empty")
    if len(words) > 200:
        raise InputError(field, "at most 200 arguments")
    return words


class CommandParams(DriverParams):
    """The programs that switch the node and tell its state, and where they run."""

    command_on_argv: list[str] | None = param(
        help="command: program and arguments that power the node on", check=parse_argv
    )
    command_off_argv: list[str] | None = param(
        help="command: program and arguments that power it off", check=parse_argv
    )
    command_status_argv: list[str] | None = param(
        help="command: program whose output tells the state", check=parse_argv
    )
    command_on_regex: str | None = param(
        help="command: regex of status output meaning on", check=validate_regex
    )
    command_off_regex: str | None = param(
        help="command: regex of status output meaning off", check=validate_regex
    )
    command_timeout: int | None = param(
        help="command: seconds a run may take (30)", check=integer_range(1, 3600, unit="seconds")
    )
    command_ssh_host: str | None = param(
        help="command: SSH host to run on (default: mko's own host)", check=validate_host
    )
    command_ssh_port: int | None = param(help="command: SSH port (22)", check=validate_port)
    command_ssh_user: str | None = param(help="command: SSH user (root)", check=validate_ssh_user)
    command_ssh_key_path: str | None = param(
        help="command: SSH private key on mko's host", check=validate_ssh_key_path
    )

    required: ClassVar[tuple[str, ...]] = ("command_on_argv",)

    def needed(self) -> tuple[str, ...]:
        """SSH settings without the host would run the commands on mko's own host instead."""
        ssh = (self.command_ssh_port, self.command_ssh_user, self.command_ssh_key_path)
        return ("command_ssh_host",) if any(value is not None for value in ssh) else ()


class CommandDriver(PowerDriver):
    """Runs the node's power programs, locally or over SSH with a verified host key."""

    name: ClassVar[str] = "command"
    label: ClassVar[str] = "command"
    Params: ClassVar[type[DriverParams]] = CommandParams
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.ON, Capability.OFF, Capability.QUERY}
    )
    node_kind: ClassVar[Literal["physical", "virtual", "any"]] = "any"
    confirms_delivery: ClassVar[bool] = True
    verify_by_query: ClassVar[bool] = True

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @classmethod
    def create(cls, settings: Settings) -> CommandDriver:
        """A driver with the settings' SSH known_hosts and timeouts."""
        return cls(settings)

    async def _run(self, node: NodeSnapshot, argv: list[str] | None, what: str) -> tuple[int, str]:
        params: CommandParams = self.params(node)
        if not argv:
            raise FatalPowerError(f"{node.label} has no {what} command (`wol configure`)")
        timeout = params.command_timeout or 30
        if params.command_ssh_host:
            return await self._over_ssh(node, params, argv, timeout)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise FatalPowerError(f"{node.label}: cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise RetryablePowerError(
                f"{node.label}: {argv[0]!r} did not finish within {timeout} s"
            ) from None
        return int(process.returncode or 0), output.decode(errors="replace")

    async def _over_ssh(
        self, node: NodeSnapshot, params: CommandParams, argv: list[str], timeout: int
    ) -> tuple[int, str]:
        from mko.ssh.client import SshTarget, connect

        if self._settings is None:
            raise FatalPowerError(f"{node.label}: SSH needs mko's settings (known_hosts)")
        assert params.command_ssh_host is not None
        target = SshTarget(
            None,
            f"{params.command_ssh_host} (command host of {node.label})",
            params.command_ssh_host,
            params.command_ssh_port or 22,
            params.command_ssh_user or "root",
            params.command_ssh_key_path,
        )
        async with connect(target, self._settings) as session:
            result = await session.run(argv, timeout=timeout)
        return result.exit_status, result.stdout + result.stderr

    async def _switch(self, node: NodeSnapshot, argv: list[str] | None, what: str) -> None:
        status, output = await self._run(node, argv, what)
        if status == 0:
            return
        tail = " ".join(output.split())[-_KEEP:]
        message = f"{node.label}: the {what} command exited {status}: {tail or '(no output)'}"
        if status == EX_TEMPFAIL:
            raise RetryablePowerError(message)
        raise FatalPowerError(message)

    async def _on(self, node: NodeSnapshot) -> None:
        await self._switch(node, self.params(node).command_on_argv, "on")

    async def _off(self, node: NodeSnapshot, *, soft: bool) -> None:
        await self._switch(node, self.params(node).command_off_argv, "off")

    async def query(self, node: NodeSnapshot) -> PowerState:
        """The status command's output matched with the regexes, else its exit code (0 on, 1 off)."""
        params: CommandParams = self.params(node)
        status, output = await self._run(node, params.command_status_argv, "status")
        if params.command_on_regex or params.command_off_regex:
            if params.command_on_regex and re.search(params.command_on_regex, output):
                return PowerState.ON
            if params.command_off_regex and re.search(params.command_off_regex, output):
                return PowerState.OFF
            return PowerState.UNKNOWN
        return {0: PowerState.ON, 1: PowerState.OFF}.get(status, PowerState.UNKNOWN)
