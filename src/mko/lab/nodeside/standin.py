"""What every stand-in shares: its context, the call log, state files, failures and power requests.

A launcher (written per node and command by mko.lab.nodesys) calls :func:`main`, which logs the call
to the node's ``calls.log`` and hands the arguments to the stand-in's ``run``; its return value is the
exit code. :func:`fail` ends a stand-in as the real tool does on an error: a message on stderr and an
exit code.

NOTE: every SSH command a test sends to a lab node starts one of these, so they import only what they
use: no dataclasses, pathlib or typing at run time (inspect, urllib and friends cost tens of
milliseconds per call on a loaded machine).
"""

from __future__ import annotations

import json
import os
import sys
import time

TYPE_CHECKING = False  # typing costs an import per call; mypy honours this spelling
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    Run = Callable[["Context", list[str]], int]

__all__ = ["Context", "fail", "main"]


class Context:
    """Where one stand-in call keeps its state, and who it runs as."""

    __slots__ = ("_host", "_resolve", "lab", "name", "state")

    def __init__(
        self,
        state: str,
        lab: str,
        name: str,
        *,
        host: str | None = None,
        resolve: Callable[[str], str] | None = None,
    ) -> None:
        self.state = state  # the node's own state directory (LAB/nodes/<node>/state)
        self.lab = lab  # the lab's root directory: state shared by every node
        self.name = name  # the command this stand-in replaces
        self._host = host  # the node's hostname (default: the running system's)
        self._resolve = resolve  # name resolution (default: the node's own, by its hosts file)

    @property
    def host(self) -> str:
        """The node's hostname: the name the simulated cluster knows it by."""
        if self._host is None:
            import socket

            self._host = socket.gethostname()
        return self._host

    def resolve(self, name: str) -> str:
        """Return the IPv4 address of host NAME as the node resolves it; OSError when it cannot."""
        if self._resolve is not None:
            return self._resolve(name)
        import socket

        return socket.gethostbyname(name)

    def path(self, name: str) -> str:
        """The node's state file NAME."""
        return os.path.join(self.state, name)

    def load(self, name: str, default: Any) -> Any:
        """Return the JSON state file NAME, or DEFAULT when it does not exist yet."""
        try:
            with open(self.path(name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return default

    def save(self, name: str, value: Any) -> None:
        """Write the JSON state file NAME whole (a reader never sees half of it)."""
        tmp = self.path(f".{name}.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(value, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path(name))

    def request_power(self, action: str) -> None:
        """Ask the lab to switch this node off ("off") or restart it ("reboot") once the command returned."""
        # Written whole, then renamed: the lab's watcher must never read a created but still empty file.
        tmp = self.path(f".power.request.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(action)
        os.replace(tmp, self.path("power.request"))

    def log_call(self, argv: list[str]) -> None:
        """Append this call to the node's calls.log: {"t", "cmd", "argv", "uid"}."""
        call = {"t": time.time(), "cmd": self.name, "argv": argv, "uid": os.geteuid()}
        with open(self.path("calls.log"), "a") as log:
            log.write(json.dumps(call) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command as the real tool does on an error: MESSAGE on stderr, exit CODE."""
    sys.stderr.write(message + "\n")
    raise SystemExit(code)


def main(state: str, lab: str, name: str, run: Run) -> int:
    """Log the call and run the stand-in on the command line's arguments; return its exit code."""
    ctx = Context(state, lab, name)
    argv = sys.argv[1:]
    ctx.log_call(argv)
    return run(ctx, argv)
