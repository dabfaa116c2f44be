"""What every stand-in shares: its context, the call log, state files, failures and power requests.

A launcher (written per node and command by mko.lab.nodesys) calls :func:`main`, which logs the call
to the node's ``calls.log`` and hands the arguments to the stand-in's ``run``; its return value is the
exit code. :func:`fail` ends a stand-in as the real tool does on an error: a message on stderr and an
exit code.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["Context", "Run", "fail", "main"]


@dataclass(frozen=True)
class Context:
    """Where one stand-in call keeps its state, and who it runs as."""

    state: Path  # the node's own state directory (LAB/nodes/<node>/state)
    lab: Path  # the lab's root directory: state shared by every node
    name: str  # the command this stand-in replaces
    host: str = field(default_factory=socket.gethostname)  # the node's hostname
    # Name resolution as the node does it (its own hosts file); tests pass a table.
    resolve: Callable[[str], str] = socket.gethostbyname

    def load(self, name: str, default: Any) -> Any:
        """Return the JSON state file NAME, or DEFAULT when it does not exist yet."""
        try:
            with open(self.state / name) as f:
                return json.load(f)
        except FileNotFoundError:
            return default

    def save(self, name: str, value: Any) -> None:
        """Write the JSON state file NAME whole (a reader never sees half of it)."""
        tmp = self.state / f".{name}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(value, f, indent=1, sort_keys=True)
        os.replace(tmp, self.state / name)

    def request_power(self, action: str) -> None:
        """Ask the lab to switch this node off ("off") or restart it ("reboot") once the command returned."""
        # Written whole, then renamed: the lab's watcher must never read a created but still empty file.
        tmp = self.state / f".power.request.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(action)
        os.replace(tmp, self.state / "power.request")

    def log_call(self, argv: list[str]) -> None:
        """Append this call to the node's calls.log: {"t", "cmd", "argv", "uid"}."""
        call = {"t": time.time(), "cmd": self.name, "argv": argv, "uid": os.geteuid()}
        with open(self.state / "calls.log", "a") as log:
            log.write(json.dumps(call) + "\n")


Run = Callable[[Context, list[str]], int]


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command as the real tool does on an error: MESSAGE on stderr, exit CODE."""
    sys.stderr.write(message + "\n")
    raise SystemExit(code)


def main(state: str, lab: str, name: str, run: Run) -> int:
    """Log the call and run the stand-in on the command line's arguments; return its exit code."""
    ctx = Context(Path(state), Path(lab), name)
    argv = sys.argv[1:]
    ctx.log_call(argv)
    return run(ctx, argv)
