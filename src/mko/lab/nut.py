"""A real NUT server for tests, benchmarks and demos: ``upsd`` + the ``dummy-ups`` driver.

Set up as docs/lab.md describes ("NUT: real upsd + dummy-ups"): configuration in a private
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

**A UPS that honours instant commands** (``output=True``). dummy-ups 2.8.0 lists one instant command,
``load.off``; upsd accepts it (``OK``) and the driver only logs "instcmd: unknown command [load.off]";
``shutdown.return`` is refused with ``ERR CMD-NOT-SUPPORTED``. NUT's own ``clone`` driver, stacked on
dummy-ups's socket, is a UPS output that does act: it lists ``shutdown.return`` and ``shutdown.stayoff``,
adds FSD, cuts its output ``offdelay`` seconds later and, for ``shutdown.return``, switches it on again
once the input has been on line for ``ondelay`` seconds, counting in ``ups.timer.shutdown`` and
``ups.timer.start`` (:meth:`NutServer.read_output`). With ``output=True`` the UPS mko watches is the
clone (``ups_name``) and the .dev file feeds ``<ups_name>-supply``, the battery and mains behind it.
NOTE: clone 2.8.0 dereferences its ``load.status`` setting on every instant command and crashes
(SIGSEGV) when it is unset; it is set to a variable dummy-ups never serves, so the clone keeps track of
its output itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from mko.lab.netns import enter_netns
from mko.platform.errors import LabError

__all__ = ["NUT_BIN", "NutServer", "OutputTimers", "end_process"]

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


@dataclass(frozen=True)
class OutputTimers:
    """The clone driver's output timers as upsd serves them: seconds left, or -1 when not counting."""

    shutdown: int  # the output goes off when this reaches 0 (after shutdown.return / stayoff)
    start: int  # counts down while the input is on line; the output comes back on when it ends

    @classmethod
    def of(cls, variables: dict[str, str]) -> OutputTimers | None:
        """From ``LIST VAR`` output; None when the UPS has no such timers."""
        try:
            return cls(int(variables["ups.timer.shutdown"]), int(variables["ups.timer.start"]))
        except (KeyError, ValueError):
            return None


class NutServer:
    """dummy-ups (and the clone driver as its output) + upsd in ``directory``; drive it by the .dev file."""

    def __init__(
        self,
        directory: Path,
        *,
        netns: str | None = None,
        port: int | None = None,
        ups_name: str = "myups",
        username: str = "admin",
        password: str = "secret",  # noqa: S107 - the throwaway user of a lab upsd
        output: bool = False,
        offdelay: int = 20,
        ondelay: int = 10,
    ) -> None:
        self.directory = directory
        self.netns = netns
        self.port = port if port is not None else (13493 if netns is not None else _free_port(None))
        self.ups_name = ups_name
        self.username = username
        self.password = password
        self.output = output
        self.offdelay = offdelay
        self.ondelay = ondelay
        # The device dummy-ups serves: the UPS itself, or with an output the supply behind the clone.
        self.supply_name = f"{ups_name}-supply" if output else ups_name
        self.host = "127.0.0.1"
        self.etc = directory / "etc"
        self.state = directory / "state"
        self.dev_file = self.etc / f"{self.supply_name}.dev"
        self.values: dict[str, str] = {
            "ups.status": "OL",
            "battery.charge": "100",
            "battery.runtime": "1800",
            "ups.load": "25",
            "input.voltage": "230",
        }
        self._mtime = 0
        self._driver: subprocess.Popen[bytes] | None = None
        self._clone: subprocess.Popen[bytes] | None = None
        self._upsd: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        netns: str | None = None,
        port: int | None = None,
        ups_name: str = "myups",
        output: bool = False,
        offdelay: int = 20,
        ondelay: int = 10,
    ) -> NutServer:
        """Write the configuration, start the driver(s) and upsd, wait until upsd reports OL."""
        server = cls(
            directory, netns=netns, port=port, ups_name=ups_name, output=output, offdelay=offdelay,
            ondelay=ondelay,
        )  # fmt: skip
        try:
            server._configure()
            server.start_driver()
            if output:
                server._start_clone()
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
        conf = "user = root\npollinterval = 1\n"
        conf += f"[{self.supply_name}]\n  driver = dummy-ups\n  port = {self.dev_file}\n"
        if self.output:
            conf += (
                f"[{self.ups_name}]\n  driver = clone\n  port = dummy-ups-{self.supply_name}\n"
                f"  offdelay = {self.offdelay}\n  ondelay = {self.ondelay}\n"
                "  load.status = outlet.mko.lab.status\n"  # see the NOTE in the module docstring
            )
        (self.etc / "ups.conf").write_text(conf)
        (self.etc / "upsd.conf").write_text(f"LISTEN {self.host} {self.port}\n")
        users = self.etc / "upsd.users"
        # What mko needs of upsd: instant commands (the power cycle) and LOGIN as a secondary monitor.
        users.write_text(
            f"[{self.username}]\n  password = {self.password}\n  actions = SET FSD\n  instcmds = ALL\n"
            "  upsmon secondary\n"
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
        self._driver = self._start_and_wait("dummy-ups", self.supply_name, "driver.log")

    def _start_clone(self) -> None:
        self._clone = self._start_and_wait("clone", self.ups_name, "clone.log")

    def _start_and_wait(self, driver: str, name: str, log_name: str) -> subprocess.Popen[bytes]:
        """Start a driver for ``name`` and wait for its socket."""
        socket_path = self.state / f"{driver}-{name}"
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        process = self._spawn([str(NUT_BIN / driver), "-a", name, "-F"], log_name)
        deadline = time.monotonic() + _READY_TIMEOUT
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"{driver} did not start: {self._log(log_name)}")
            time.sleep(0.02)
        return process

    def _start_upsd(self) -> None:
        self._upsd = self._spawn([str(NUT_BIN / "upsd"), "-u", "root", "-F"], "upsd.log")

    def kill_driver(self) -> None:
        """Kill the driver (SIGKILL, like a crash): upsd then answers ERR DRIVER-NOT-CONNECTED."""
        if self._driver is not None:
            end_process(self._driver, signal.SIGKILL)
            self._driver = None

    def stop(self) -> None:
        """Stop upsd and the drivers; safe to call twice."""
        for proc in (self._upsd, self._clone, self._driver):
            if proc is not None:
                end_process(proc, signal.SIGTERM)
        self._upsd = self._clone = self._driver = None

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

    def read_var(self, name: str, ups: str | None = None) -> str | None:
        """A variable as upsd serves it now; None on ERR or when upsd cannot be reached."""
        ups = ups or self.ups_name
        try:
            reply = self.query(f"GET VAR {ups} {name}")
        except OSError:
            return None
        prefix = f"VAR {ups} {name} "
        if not reply.startswith(prefix):
            return None
        return reply[len(prefix) :].strip('"')

    def read_output(self) -> OutputTimers | None:
        """The output's timers (``output=True``); None when upsd cannot say, or they keep changing.

        The two timers are two reads: the clone driver's ``shutdown.return`` sets both at once (shutdown
        to offdelay, start to ondelay), and a look between the two updates reached upsd would pair the
        old shutdown (-1) with the new start: "off, returning", a load cut offdelay seconds early. So a
        pair counts only when the next read gives the same pair.
        """
        previous: tuple[str, str] | None = None
        for _ in range(3):
            shutdown, start = self.read_var("ups.timer.shutdown"), self.read_var("ups.timer.start")
            if shutdown is None or start is None:
                return None
            if (shutdown, start) == previous:
                return OutputTimers.of({"ups.timer.shutdown": shutdown, "ups.timer.start": start})
            previous = (shutdown, start)
        return None

    def served_status(self) -> frozenset[str]:
        """The tokens of ``ups.status`` as upsd serves them, without the FSD a power cycle adds."""
        return frozenset((self.read_var("ups.status") or "").split()) - {"FSD"}

    def wait_for_status(self, status: str, timeout: float = 5.0) -> float:
        """Wait until upsd serves these status tokens (FSD aside); return the time.monotonic() seen."""
        wanted = frozenset(status.split())
        deadline = time.monotonic() + timeout
        while (seen := self.served_status()) != wanted:
            if time.monotonic() > deadline:
                raise LabError(f"upsd did not serve ups.status {status!r} within {timeout}s (now {seen})")
            time.sleep(0.02)
        return time.monotonic()

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
