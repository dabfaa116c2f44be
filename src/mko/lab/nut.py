"""A real NUT server for tests, benchmarks and demos: ``upsd`` + the ``dummy-ups`` driver.

Set up as in /work/shared/TESTING.md ("NUT: real upsd + dummy-ups"): configuration in a private
directory (``NUT_CONFPATH`` / ``NUT_STATEPATH``), the driver reading ``<ups>.dev``, upsd listening on
127.0.0.1 — inside a network namespace when one is given, so an orchestrator running in a lab's
``orch`` namespace reaches it at its own 127.0.0.1 while its magic packets go out on the lab LAN::

    with NutServer.start(tmp_path / "nut", netns=lab.orch) as nut:
        nut.set(status="OB DISCHRG", charge=80)    # rewrites the .dev file; upsd sees it within ~1 s
        nut.wait_for("ups.status", "OB DISCHRG")
        nut.kill_driver()                          # upsd now answers ERR DRIVER-NOT-CONNECTED

NOTE: dummy-ups 2.8.0 re-reads its .dev file when the file's mtime (whole seconds) changes, at its poll
interval (1 s); upsd's answer changes at that tick. set() gives every write a later mtime second.
The driver crashes (glibc "bit out of range 0 - FD_SETSIZE") when upsd disconnects from it and it
later writes to that socket, so upsd is never restarted alone: stop() ends both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from mko.lab.netns import LabError, enter_netns

__all__ = ["NUT_BIN", "NutServer", "end_process"]

NUT_BIN = Path("/lib/nut")
_READY_TIMEOUT = 20.0


def _free_port(netns: str | None) -> int:
    with contextlib.ExitStack() as stack:
        if netns is not None:
            stack.enter_context(enter_netns(netns))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            return port


class NutServer:
    """dummy-ups + upsd in ``directory``; control the UPS by rewriting its .dev file."""

    def __init__(
        self,
        directory: Path,
        *,
        netns: str | None = None,
        port: int | None = None,
        ups_name: str = "myups",
        username: str = "admin",
        password: str = "secret",  # noqa: S107 - the throwaway user of a lab upsd
    ) -> None:
        self.directory = directory
        self.netns = netns
        self.port = port if port is not None else (13493 if netns is not None else _free_port(None))
        self.ups_name = ups_name
        self.username = username
        self.password = password
        self.host = "127.0.0.1"
        self.etc = directory / "etc"
        self.state = directory / "state"
        self.dev_file = self.etc / f"{ups_name}.dev"
        self.values: dict[str, str] = {
            "ups.status": "OL",
            "battery.charge": "100",
            "battery.runtime": "1800",
            "ups.load": "25",
            "input.voltage": "230",
        }
        self._mtime = 0
        self._driver: subprocess.Popen[bytes] | None = None
        self._upsd: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def start(
        cls, directory: Path, *, netns: str | None = None, port: int | None = None, ups_name: str = "myups"
    ) -> NutServer:
        """Write the configuration, start the driver and upsd, wait until upsd reports OL."""
        server = cls(directory, netns=netns, port=port, ups_name=ups_name)
        try:
            server._configure()
            server.start_driver()
            server._start_upsd()
            server.wait_for("ups.status", "OL", timeout=_READY_TIMEOUT)
        except BaseException:
            server.stop()
            raise
        return server

    def _configure(self) -> None:
        for binary in ("upsd", "dummy-ups"):
            if not (NUT_BIN / binary).exists():
                raise LabError(f"{NUT_BIN / binary} is missing: apt-get install -y nut-server nut-client")
        self.etc.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o700)
        (self.etc / "ups.conf").write_text(
            "user = root\npollinterval = 1\n"
            f"[{self.ups_name}]\n  driver = dummy-ups\n  port = {self.dev_file}\n"
        )
        (self.etc / "upsd.conf").write_text(f"LISTEN {self.host} {self.port}\n")
        users = self.etc / "upsd.users"
        users.write_text(
            f"[{self.username}]\n  password = {self.password}\n  actions = SET\n  instcmds = ALL\n"
        )
        users.chmod(0o600)
        self.etc.chmod(0o700)
        self._write_dev()

    def _env(self) -> dict[str, str]:
        return {**os.environ, "NUT_CONFPATH": str(self.etc), "NUT_STATEPATH": str(self.state)}

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        if self.netns is not None:
            ip = shutil.which("ip")
            if ip is None:
                raise LabError("the iproute2 'ip' command is missing")
            argv = [ip, "netns", "exec", self.netns, *argv]  # ip execs the program: same pid
        with open(self.directory / log_name, "ab") as log:
            return subprocess.Popen(argv, env=self._env(), stdout=log, stderr=subprocess.STDOUT)

    def start_driver(self) -> None:
        """Start dummy-ups (again, after kill_driver) and wait for its socket."""
        if self._driver is not None and self._driver.poll() is None:
            return
        socket_path = self.state / f"dummy-ups-{self.ups_name}"
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        self._driver = self._spawn([str(NUT_BIN / "dummy-ups"), "-a", self.ups_name, "-F"], "driver.log")
        deadline = time.monotonic() + _READY_TIMEOUT
        while not socket_path.exists():
            if self._driver.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"dummy-ups did not start: {self._log('driver.log')}")
            time.sleep(0.02)

    def _start_upsd(self) -> None:
        self._upsd = self._spawn([str(NUT_BIN / "upsd"), "-u", "root", "-F"], "upsd.log")

    def kill_driver(self) -> None:
        """Kill the driver (SIGKILL, like a crash): upsd then answers ERR DRIVER-NOT-CONNECTED."""
        if self._driver is not None:
            end_process(self._driver, signal.SIGKILL)
            self._driver = None

    def stop(self) -> None:
        """Stop upsd and the driver; safe to call twice."""
        for proc in (self._upsd, self._driver):
            if proc is not None:
                end_process(proc, signal.SIGTERM)
        self._upsd = self._driver = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / name).read_text(errors="replace")[-2000:]
        return ""

    # ------------------------------------------------------------------ the UPS

    @property
    def device(self) -> str:
        """``ups@host:port``, NUT's notation."""
        return f"{self.ups_name}@{self.host}:{self.port}"

    def set(self, *, status: str | None = None, charge: float | None = None, **variables: str) -> None:
        """Change variables (``ups_load="40"`` for ups.load) by rewriting the .dev file atomically."""
        if status is not None:
            self.values["ups.status"] = status
        if charge is not None:
            self.values["battery.charge"] = f"{charge:g}"
        for key, value in variables.items():
            self.values[key.replace("_", ".")] = value
        self._write_dev()

    def _write_dev(self) -> None:
        text = "".join(f"{key}: {value}\n" for key, value in self.values.items())
        temporary = self.dev_file.with_suffix(".tmp")
        temporary.write_text(text)
        # NOTE: dummy-ups 2.8.0 re-reads the file only when its mtime, in whole seconds, changed: a
        # second write within the same second would go unseen. Every write gets a later second.
        self._mtime = max(int(time.time()), self._mtime + 1)
        os.utime(temporary, (self._mtime, self._mtime))
        os.replace(temporary, self.dev_file)  # the driver never reads a half-written file

    def query(self, command: str, timeout: float = 2.0) -> str:
        """Send one protocol command to upsd (from its namespace); return the first reply line."""
        with contextlib.ExitStack() as stack:
            if self.netns is not None:
                stack.enter_context(enter_netns(self.netns))
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        with sock, sock.makefile("rwb") as stream:
            stream.write(command.encode() + b"\n")
            stream.flush()
            return stream.readline().decode().strip()

    def read_var(self, name: str) -> str | None:
        """A variable as upsd serves it now; None on ERR or when upsd cannot be reached."""
        try:
            reply = self.query(f"GET VAR {self.ups_name} {name}")
        except OSError:
            return None
        prefix = f"VAR {self.ups_name} {name} "
        if not reply.startswith(prefix):
            return None
        return reply[len(prefix) :].strip('"')

    def wait_for(self, name: str, value: str, timeout: float = 5.0, interval: float = 0.02) -> float:
        """Wait until upsd serves ``name`` = ``value``; return the time.monotonic() it was first seen."""
        deadline = time.monotonic() + timeout
        while True:
            if self.read_var(name) == value:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise LabError(
                    f"upsd did not serve {name}={value!r} within {timeout}s (now {self.read_var(name)!r});"
                    f" upsd log: {self._log('upsd.log')}"
                )
            time.sleep(interval)


def end_process(proc: subprocess.Popen[bytes], sig: signal.Signals, grace: float = 5.0) -> None:
    """Send ``sig`` to a child still running, wait ``grace`` seconds, then kill it; always reaps it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
