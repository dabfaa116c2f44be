"""The lab daemon behind ``mko lab up``: it owns a running lab until ``mko lab down``.

It builds the lab (namespaces and bridge, one sshd per node with the MicroK8s/systemd/ethtool stand-ins,
a real upsd + dummy-ups), boots every node until MicroK8s reports it Ready, registers it all in the lab's
own database (:func:`mko.lab.provision.provision_lab`), optionally starts the lab's orchestrator
(``mko serve --lab``), then answers commands on ``control.sock`` (see :mod:`mko.lab.control`).
The packet recorders and power simulation are threads of this process, which is why the lab needs one.

The UPS's **output** feeds every node (and, with ``orchestrator_on_ups``, the lab's orchestrator): it
goes off when the battery is empty on battery, or when the UPS carries out a power cycle mko asked for
(NUT's clone driver, mko.lab.nut: ``shutdown.return`` cuts it after the UPS's shutdown delay and gives
it back once mains has held for its start delay). Without output nothing boots, and the orchestrator on
the UPS dies with SIGKILL; when the output returns the nodes stay off (they boot on magic packets) and
the orchestrator's host boots: ``mko serve --lab`` starts again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from mko.lab.control import LAB_PORT, LabPaths, check_battery, check_flap, lab_settings, pid_alive
from mko.lab.harness import RunningLab
from mko.lab.microk8s import Microk8sCluster, configure_microk8s
from mko.lab.nut import NutServer, OutputTimers, end_process
from mko.platform.db.models.ups import PowerEvent
from mko.platform.errors import ConflictError, InputError, LabError, MkoError
from mko.platform.files import write_atomic
from mko.platform.settings import Settings

__all__ = ["LabDaemon", "LabSpec", "charge_after"]

log = logging.getLogger(__name__)

_PREFIX = re.compile(r"[a-z][a-z0-9]{0,11}")
_READY_TIMEOUT = 30.0
_SERVER_TIMEOUT = 60.0
ON_LINE, ON_BATTERY = "OL CHRG", "OB DISCHRG"
LOW_CHARGE = 20  # battery.charge.low of the lab UPS: at or below it, on battery, the UPS reports LB
FULL_RUNTIME = 1800  # seconds of runtime at 100 %
_OUTPUT_POLL = 0.25  # how often the daemon looks at the UPS's output timers
_HALT_GRACE = 0.5  # a host shutdown command returns before the host goes down


def charge_after(charge: float, elapsed: float, runtime: float, *, on_battery: bool) -> float:
    """The charge ``elapsed`` seconds later: on battery it falls to 0 over ``runtime`` seconds from full,
    on line it refills four times slower (as a real UPS charger does); ``runtime`` 0 keeps it as it is."""
    if runtime <= 0:
        return charge
    rate = 100.0 / runtime
    if on_battery:
        return max(0.0, charge - elapsed * rate)
    return min(100.0, charge + elapsed * rate / 4)


@dataclass(frozen=True)
class LabSpec:
    """What ``mko lab up`` builds."""

    nodes: int = 3
    control_planes: int = 1
    shutdown_delay: int = 5
    boot_delay: float = 2.0
    serve: bool = True
    host: str = "127.0.0.1"
    port: int = LAB_PORT
    prefix: str = "mkolab"
    battery_runtime: float = 600.0  # seconds a full battery lasts on battery; 0: it never drains
    # The orchestrator's host is on the lab's UPS: the UPS power-cycles its load at the end of a
    # shutdown, and the orchestrator dies when the output goes off and boots when it returns.
    orchestrator_on_ups: bool = False
    ups_offdelay: int = 5  # seconds from shutdown.return to the output going off
    ups_ondelay: int = 3  # seconds mains must hold before the output comes back
    stable_for: int = 2  # the restore rule acts once mains has held this long
    min_charge: int | None = None  # … and once the battery has this charge (percent)
    shutdown_on: str = (
        "power_loss"  # the shutdown rule's event: power_loss (after shutdown_delay) or runtime_low
    )

    def check(self) -> None:
        """Raise InputError naming the first impossible field."""
        if not 1 <= self.nodes <= 40:
            raise InputError("nodes", "must be between 1 and 40")
        if not 1 <= self.control_planes <= self.nodes:
            raise InputError("control-planes", f"must be between 1 and the number of nodes ({self.nodes})")
        if not 0 <= self.shutdown_delay <= 3600:
            raise InputError("shutdown-delay", "must be between 0 and 3600 seconds")
        if not 0 <= self.boot_delay <= 120:
            raise InputError("boot-delay", "must be between 0 and 120 seconds")
        if not 1 <= self.port <= 65535:
            raise InputError("port", "must be between 1 and 65535")
        if not 0 <= self.battery_runtime <= 86400:
            raise InputError("battery-runtime", "must be between 0 (never drains) and 86400 seconds")
        if not _PREFIX.fullmatch(self.prefix):
            raise InputError("prefix", "use 1-12 of [a-z0-9], starting with a letter")
        if self.orchestrator_on_ups and not self.serve:
            raise InputError(
                "orchestrator-on-ups", "the lab restarts only an orchestrator it runs: drop --no-serve"
            )
        if not 1 <= self.ups_offdelay <= 600 or not 1 <= self.ups_ondelay <= 600:
            raise InputError("ups-offdelay", "the UPS's delays must be between 1 and 600 seconds")
        if not 0 <= self.stable_for <= 3600:
            raise InputError("stable-for", "must be between 0 and 3600 seconds")
        if self.min_charge is not None and not 1 <= self.min_charge <= 100:
            raise InputError("min-charge", "must be between 1 and 100")
        if self.shutdown_on not in ("power_loss", "runtime_low"):
            raise InputError("shutdown-on", "must be power_loss or runtime_low")


class LabDaemon:
    """Builds the lab in ``paths`` as ``spec`` says, serves commands until told to stop, tears it down."""

    def __init__(self, paths: LabPaths, spec: LabSpec, settings: Settings) -> None:
        self.paths = paths
        self.spec = spec
        self.settings = lab_settings(paths, settings)
        self.running: RunningLab | None = None
        self.nut: NutServer | None = None
        self.cluster: Microk8sCluster | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._state: dict[str, Any] = {}
        self._record_lock = threading.Lock()
        self._stop = threading.Event()
        self._ups_lock = threading.Lock()
        self._flap: dict[str, float] | None = None
        self._flap_thread: threading.Thread | None = None
        self._control: socketserver.ThreadingUnixStreamServer | None = None
        # The UPS output and the orchestrator's host (mko.lab.nut: the clone driver's timers).
        self._output_on = True
        self._output_why = ""
        self._cycle: str | None = None  # None | "pending" | "off-return" | "off-stay"
        self._timers: OutputTimers | None = None
        self._server_lock = threading.RLock()
        self._host: str = "up"  # up | halted | killed | lost power
        self._server_restarts = 0

    # ------------------------------------------------------------------ life cycle

    def run(self) -> int:
        """Build, serve until ``down`` or SIGTERM, tear down; 0 when the lab came up, 1 when it failed."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self._stop.set())
        self._record(status="starting", step="preparing", pid=os.getpid(), spec=asdict(self.spec))
        try:
            self._build()
        except BaseException as exc:  # the person sees why in `mko lab up`; everything built is removed
            log.exception("lab build failed")
            self._record(status="failed", error=str(exc) or type(exc).__name__)
            self._teardown()
            return 1
        self._record(status="up", step="up", ready_at=time.time())
        if self.spec.battery_runtime > 0:
            threading.Thread(target=self._run_battery, name="mko-lab-battery", daemon=True).start()
        threading.Thread(target=self._run_output, name="mko-lab-ups-output", daemon=True).start()
        log.info("lab up: %d nodes, UPS %s", len(self._nodes()), self._state.get("ups"))
        self._stop.wait()
        self._teardown()
        return 0

    def _build(self) -> None:
        spec, paths = self.spec, self.paths
        self._clear_previous()
        self._record(step=f"building the network and {spec.nodes} node(s) with sshd")
        self.running = RunningLab.start(
            spec.prefix, spec.nodes, ssh=True, boot_delay=spec.boot_delay, root=paths.system
        )
        lab = self.running.lab
        self._record(
            prefix=spec.prefix,
            namespaces=lab.namespaces,
            orch=lab.orch,
            subnet=str(lab.subnet),
            nodes=[
                {
                    "name": r.name,
                    "hostname": r.hostname,
                    "ip": r.ip,
                    "mac": r.mac,
                    "role": "control_plane" if i < spec.control_planes else "worker",
                }
                for i, r in enumerate(self.running.nodes)
            ],
        )
        self._stop_check()
        self._record(step="starting upsd and dummy-ups")
        self.nut = NutServer.start(
            paths.nut, netns=lab.orch, output=True, offdelay=spec.ups_offdelay, ondelay=spec.ups_ondelay
        )
        full = int(spec.battery_runtime or FULL_RUNTIME)
        self.nut.set(status=ON_LINE, charge=100, battery_runtime=str(full))
        self._record(ups={"name": self.nut.ups_name, "host": self.nut.host, "port": self.nut.port})
        self._stop_check()
        self._record(step="booting the nodes and MicroK8s")
        self.cluster = configure_microk8s(self.running, control_planes=spec.control_planes)
        self.running.power_on_all(timeout=_READY_TIMEOUT + spec.boot_delay)
        self._wait_ready()
        self._stop_check()
        self._record(step="registering the lab in its database")
        password = self._provision()
        self._start_control()
        if spec.serve:
            self._record(step="starting the lab's orchestrator")
            self._start_server()
        self._record(admin_password_file=str(paths.admin_password) if password else None)

    def _clear_previous(self) -> None:
        # A lab is rebuilt from scratch every time: a fresh database, fresh keys, a fresh UPS.
        paths = self.paths
        for name in ("lab.db", "lab.db-wal", "lab.db-shm", "known_hosts", "secret.key", "admin-password"):
            with contextlib.suppress(FileNotFoundError):
                (paths.directory / name).unlink()
        for directory in (paths.system, paths.nut):
            shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            paths.control.unlink()

    def _wait_ready(self) -> None:
        assert self.cluster is not None
        deadline = time.monotonic() + _READY_TIMEOUT
        while not all(node["ready"] for node in self.cluster.nodes().values()):
            if time.monotonic() > deadline:
                late = [h for h, n in self.cluster.nodes().items() if not n["ready"]]
                raise LabError(
                    f"MicroK8s did not report Ready within {_READY_TIMEOUT:g} s: {', '.join(late)}"
                )
            self._stop_check()
            time.sleep(0.1)

    def _provision(self) -> str | None:
        from mko.access.users import ensure_first_admin
        from mko.lab.provision import provision_lab
        from mko.platform.db.upgrade import upgrade_database
        from mko.wiring import wire

        assert self.running is not None and self.nut is not None
        upgrade_database(self.settings.database_url, backup=False)
        # Wired like any mko process on the lab's database: node writes refresh the lab's inventory.
        wiring = wire(self.settings)
        try:
            with wiring.session_factory() as session:
                provision_lab(
                    session,
                    self.settings,
                    self.running,
                    self.nut,
                    control_planes=self.spec.control_planes,
                    shutdown_delay=self.spec.shutdown_delay,
                    stable_for=self.spec.stable_for,
                    min_charge=self.spec.min_charge,
                    power_cycle=self.spec.orchestrator_on_ups,
                    shutdown_on=PowerEvent(self.spec.shutdown_on),
                )
                password = ensure_first_admin(session, self.settings, None)
        finally:
            wiring.close()
        if password:
            fd = os.open(self.paths.admin_password, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
        return password

    def _start_server(self) -> None:
        argv = [sys.executable, "-m", "mko", "serve", "--lab", "--lab-dir", str(self.paths.directory)]
        argv += ["--host", self.spec.host, "--port", str(self.spec.port)]
        with self._server_lock:
            self._record(server=None)
            with open(self.paths.server_log, "ab") as out:
                self._server = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            server = self._server
            self._host = "up"
        deadline = time.monotonic() + _SERVER_TIMEOUT
        # `mko serve --lab` registers itself (command register-server) once it listens.
        while not self._state.get("server"):
            if server.poll() is not None:
                tail = self.paths.server_log.read_text(errors="replace")[-1500:]
                raise LabError(f"the lab's orchestrator exited with {server.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise LabError(f"the lab's orchestrator did not start within {_SERVER_TIMEOUT:g} s")
            self._stop_check()
            time.sleep(0.1)

    def _server_running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def _end_server(self, sig: signal.Signals, host: str) -> bool:
        """Stop the orchestrator (SIGKILL: its host lost power; SIGTERM: it shuts down); False if none ran."""
        with self._server_lock:
            server, running = self._server, self._server_running()
            if running:  # a host already down stays down as it went
                self._host = host
            self._record(server=None)
        if server is not None:
            end_process(server, sig, grace=10.0)  # outside the lock: a clean stop takes seconds
        if running:
            log.warning("lab orchestrator %s (%s)", host, sig.name)
        return running

    def _boot_server(self) -> None:
        """The orchestrator's host boots (its power came back): `mko serve --lab` starts again."""
        try:
            self._start_server()
            self._server_restarts += 1
            log.info("lab orchestrator booted again")
        except LabError:
            log.exception("the lab's orchestrator did not come back")

    def _stop_check(self) -> None:
        if self._stop.is_set():
            raise LabError("interrupted while building the lab")

    def _teardown(self) -> None:
        self._record(step="tearing down")
        self._end_flap()
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.paths.control.unlink()
        server_pid = (self._state.get("server") or {}).get("pid")
        if self._server is not None:
            with self._server_lock:
                end_process(self._server, signal.SIGTERM, grace=10.0)  # it records cancelled work
        elif server_pid and pid_alive(server_pid):  # a foreground `mko serve --lab` ends with its lab
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGTERM)
        if self.nut is not None:
            self.nut.stop()
        if self.running is not None:
            self.running.close()  # kills what is left in the namespaces, deletes them and system/
        shutil.rmtree(self.paths.nut, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.paths.state.unlink()
        log.info("lab down")

    # ------------------------------------------------------------------ lab.json

    def _record(self, **changes: Any) -> None:
        # Control requests, the boot threads and the main thread all record: one at a time, each through
        # a temporary file of its own, so no writer renames away another's file.
        with self._record_lock:
            self._state.update(changes)
            self.paths.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(self.paths.state, json.dumps(self._state, indent=1, sort_keys=True).encode())

    # ------------------------------------------------------------------ commands

    def _start_control(self) -> None:
        daemon = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline()
                try:
                    request = json.loads(line)
                    reply = {"ok": True, **daemon.handle(request)}
                except InputError as exc:
                    reply = {"ok": False, "kind": "input", "field": exc.field, "error": exc.message}
                except ConflictError as exc:
                    reply = {"ok": False, "kind": "conflict", "error": str(exc)}
                except (MkoError, ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc) or type(exc).__name__}
                self.wfile.write(json.dumps(reply).encode() + b"\n")
                if request_is_down(line):
                    daemon._stop.set()  # after the reply went out

        server = socketserver.ThreadingUnixStreamServer(str(self.paths.control), Handler)
        server.daemon_threads = True
        self.paths.control.chmod(0o600)  # root's lab: only root drives it
        self._control = server
        threading.Thread(target=server.serve_forever, name="mko-lab-control", daemon=True).start()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one command of :class:`mko.lab.control.LabControl`; return the reply's fields."""
        commands: dict[str, Any] = {
            "status": self.status,
            "power-fail": lambda: self._set_ups(ON_BATTERY),
            "power-restore": self._power_restore,
            "battery": lambda: self._battery(float(request["percent"])),
            "flap": lambda: self._start_flap(float(request["seconds"]), float(request["period"])),
            "register-server": lambda: self._register_server(int(request["pid"]), str(request["url"])),
            "host-halt": self._host_halt,
            "kill-server": self._kill_server,
            "start-server": self._start_server_command,
            "down": lambda: {"stopping": True},
        }
        command = commands.get(str(request.get("command")))
        if command is None:
            raise InputError("command", f"unknown lab command {request.get('command')!r}")
        reply: dict[str, Any] = command()
        return reply

    def _power_restore(self) -> dict[str, Any]:
        self._end_flap()
        return self._set_ups(ON_LINE)

    def status(self) -> dict[str, Any]:
        """Nodes, UPS and flap as they are now."""
        return {
            "directory": str(self.paths.directory),
            "prefix": self.spec.prefix,
            "nodes": self._nodes(),
            "ups": self._ups(),
            "flap": dict(self._flap) if self._flap else None,
            "server": self._state.get("server"),
            "orchestrator": {
                "on_ups": self.spec.orchestrator_on_ups,
                "host": self._host,
                "running": self._server_running(),
                "restarts": self._server_restarts,
            },
            "shutdown_delay": self.spec.shutdown_delay,
        }

    def _nodes(self) -> list[dict[str, Any]]:
        if self.running is None or self.cluster is None:
            return []
        simulated = self.cluster.nodes()
        found = []
        for described, node in zip(self._state.get("nodes", []), self.running.nodes, strict=False):
            k8s = simulated.get(node.hostname, {})
            found.append(
                described
                | {
                    "power": node.power.state,
                    "boots": node.power.boot_count,
                    "microk8s": "running" if k8s.get("running") else "stopped",
                    "enabled": bool(k8s.get("enabled")),
                    "ready": bool(k8s.get("ready")),
                    "cordoned": bool(k8s.get("cordoned")),
                    "packets": len(node.recorder.packets_for(node.mac)),
                    "supplied": node.power.supplied,
                }
            )
        return found

    def _ups(self) -> dict[str, Any]:
        assert self.nut is not None
        values = dict(self.nut.values)
        return {
            "name": self.nut.ups_name,
            "status": self.nut.read_var("ups.status"),  # as upsd serves it, not as last written
            "charge": float(values["battery.charge"]),  # as last written; upsd serves it within ~1 s
            "runtime": int(float(values["battery.runtime"])),
            "output": self._describe_output(),
        }

    def _describe_output(self) -> str:
        """``on``, ``off (why)``, ``on, off in 3 s`` or ``off, back 2 s after mains``."""
        timers = self._timers
        if self._output_on:
            if timers is not None and timers.shutdown >= 0:
                return f"on, off in {timers.shutdown} s (power cycle)"
            return "on"
        if self._cycle == "off-return" and timers is not None and timers.start >= 0:
            return f"off ({self._output_why}), back {timers.start} s after mains holds"
        return f"off ({self._output_why})"

    def _set_ups(self, status: str) -> dict[str, Any]:
        assert self.nut is not None
        with self._ups_lock:
            charge = float(self.nut.values["battery.charge"])
            if status == ON_BATTERY and charge <= LOW_CHARGE:
                status += " LB"
            self.nut.set(status=status)
            # FSD aside: the output's power cycle adds it until the output goes off.
            self.nut.wait_for_status(status, timeout=10)
        log.info("lab UPS now %s (charge %g %%)", status, charge)
        return {"ups": self._ups()}

    def _run_battery(self) -> None:
        """Drain the battery while on battery and feeding its output (LB at 20 %, the power cut at 0 %),
        recharge on line."""
        assert self.nut is not None
        # NOTE: every write must move the .dev file's mtime on by a whole second (see mko.lab.nut).
        tick = max(2.0, self.spec.battery_runtime / 100)
        charge = float(self.nut.values["battery.charge"])
        cut = False
        while not self._stop.wait(tick):
            with self._ups_lock:
                on_battery = self._on_battery()
                written = float(self.nut.values["battery.charge"])
                if abs(written - round(charge)) >= 1:  # `mko lab battery` set it meanwhile
                    charge = written
                if not on_battery or self._output_on:  # with its output off the UPS feeds nothing
                    charge = charge_after(charge, tick, self.spec.battery_runtime, on_battery=on_battery)
                status = self.nut.values["ups.status"]
                if on_battery and charge <= LOW_CHARGE and "LB" not in status.split():
                    status += " LB"
                if round(charge) != round(written) or status != self.nut.values["ups.status"]:
                    runtime = str(int(self.spec.battery_runtime * charge / 100))
                    self.nut.set(status=status, charge=round(charge), battery_runtime=runtime)
                empty = on_battery and round(charge) == 0
            if empty and not cut:
                self._cut_power()
            cut = empty

    def _on_battery(self) -> bool:
        assert self.nut is not None
        return "OB" in self.nut.values["ups.status"].split()

    def _battery(self, percent: float) -> dict[str, Any]:
        check_battery(percent)
        assert self.nut is not None
        with self._ups_lock:
            self.nut.values["battery.charge"] = f"{percent:g}"
            full = self.spec.battery_runtime or FULL_RUNTIME
            self.nut.values["battery.runtime"] = str(int(full * percent / 100))
        reply = self._set_ups(ON_BATTERY if self._on_battery() else ON_LINE)
        if percent == 0 and self._on_battery():
            reply["cut"] = self._cut_power()
        return reply

    def _cut_power(self) -> list[str]:
        """The battery is empty: every node still on loses power at once, as in a real outage."""
        return self._output_off("battery empty")

    # ------------------------------------------------------------------ the UPS's output

    def _run_output(self) -> None:
        """Follow the UPS's output: off on an empty battery or a power cycle, back on after them.

        This thread takes no lock another command holds for long: a window of the clone's timers
        (a second or two) must not be missed while, say, a power-restore waits for upsd.
        """
        assert self.nut is not None
        while not self._stop.wait(_OUTPUT_POLL):
            try:
                self._follow_output()
            except Exception:  # never let one bad look stop the simulation
                log.exception("lab UPS output: could not follow it")

    def _follow_output(self) -> None:
        assert self.nut is not None
        timers = self.nut.read_output()
        if timers is not None:
            self._timers = timers
            previous, self._cycle = self._cycle, _next_cycle(self._cycle, timers, self._stayoff())
            if previous == "pending" and self._cycle is None:
                # The output went off and came back between two looks: it was off all the same.
                self._output_off("power cycle")
        values = dict(self.nut.values)
        on_battery = "OB" in values["ups.status"].split()
        empty = on_battery and float(values["battery.charge"]) <= 0
        cycled = self._cycle in ("off-return", "off-stay")
        if (cycled or empty) and self._output_on:
            self._output_off("power cycle" if cycled else "battery empty")
        elif not (cycled or empty) and not self._output_on and not on_battery:
            self._output_back()

    def _stayoff(self) -> bool:
        """Whether the last instant command upsd carried out was shutdown.stayoff (no return)."""
        assert self.nut is not None
        with contextlib.suppress(OSError):
            done = [
                line for line in (self.nut.directory / "upsd.log").read_text().splitlines() if " did " in line
            ]
            return bool(done) and " did shutdown.stayoff " in done[-1]
        return False

    def _output_off(self, why: str) -> list[str]:
        """No more output: every node loses power, and so does an orchestrator on the UPS."""
        assert self.running is not None
        with self._server_lock:
            if not self._output_on:
                return []
            self._output_on, self._output_why = False, why
        cut = [node.hostname for node in self.running.nodes if node.power.state != "off"]
        for node in self.running.nodes:
            node.power.cut_supply()
        log.warning("lab UPS output off (%s): power cut on %s", why, ", ".join(cut) or "no node")
        if self.spec.orchestrator_on_ups:
            self._end_server(signal.SIGKILL, "lost power")
        return cut

    def _output_back(self) -> None:
        """The output returns: nodes have power again (off until woken); the orchestrator's host boots."""
        assert self.running is not None
        with self._server_lock:
            if self._output_on:
                return
            self._output_on, self._output_why = True, ""
        for node in self.running.nodes:
            node.power.restore_supply()
        log.warning("lab UPS output back on")
        if self.spec.orchestrator_on_ups and not self._server_running():
            threading.Thread(target=self._boot_server, name="mko-lab-boot-server", daemon=True).start()

    def _host_halt(self) -> dict[str, Any]:
        """The orchestrator's host shutdown command: stop it a moment after replying; it stays down."""

        def halt() -> None:
            time.sleep(_HALT_GRACE)
            self._end_server(signal.SIGTERM, "halted")

        threading.Thread(target=halt, name="mko-lab-host-halt", daemon=True).start()
        return {"halting": True}

    def _kill_server(self) -> dict[str, Any]:
        if self._server is None:
            raise ConflictError("the lab runs no orchestrator (started with --no-serve)")
        return {"killed": self._end_server(signal.SIGKILL, "killed")}

    def _start_server_command(self) -> dict[str, Any]:
        if self._server is None:
            raise ConflictError("the lab runs no orchestrator (started with --no-serve)")
        if self._server_running():
            raise ConflictError("the lab's orchestrator is already running")
        if not self._output_on and self.spec.orchestrator_on_ups:
            raise ConflictError("the orchestrator's host has no power: the UPS output is off")
        self._start_server()
        return {"server": self._state.get("server")}

    def _start_flap(self, seconds: float, period: float) -> dict[str, Any]:
        check_flap(seconds, period)
        if self._flap is not None:
            raise ConflictError("the lab UPS is already flapping; `mko lab power-restore` ends it")
        until = time.time() + seconds
        self._flap = {"until": until, "period": period, "seconds": seconds}
        self._flap_thread = threading.Thread(
            target=self._run_flap, args=(until, period), name="mko-lab-flap", daemon=True
        )
        self._flap_thread.start()
        return {"flap": dict(self._flap)}

    def _run_flap(self, until: float, period: float) -> None:
        on_battery = not self._on_battery()
        try:
            while self._flap is not None and time.time() < until:
                self._set_ups(ON_BATTERY if on_battery else ON_LINE)
                on_battery = not on_battery
                if self._stop.wait(period):
                    return
            if self._flap is not None:
                self._set_ups(ON_LINE)  # a flap always ends with mains back
        except MkoError:
            log.exception("lab UPS flap failed")
        finally:
            self._flap = None

    def _end_flap(self) -> None:
        self._flap = None
        thread = self._flap_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        self._flap_thread = None

    def _register_server(self, pid: int, url: str) -> dict[str, Any]:
        current = self._state.get("server")
        if current and current.get("pid") != pid and pid_alive(current.get("pid")):
            raise ConflictError(
                f"the lab's orchestrator already serves {current['url']} (pid {current['pid']})"
            )
        self._record(server={"pid": pid, "url": url})
        return {"server": self._state["server"]}


def _next_cycle(cycle: str | None, timers: OutputTimers, stayoff: bool) -> str | None:
    """Where a power cycle stands after these timers: pending, off (returning, or staying off), done."""
    if timers.shutdown >= 0:
        return "pending"
    if timers.start >= 0:
        return "off-return"  # off, and it comes back once mains has held for the start delay
    if cycle == "pending":
        # Off with no start timer: shutdown.stayoff; else the return came between two looks.
        return "off-stay" if stayoff else None
    if cycle == "off-return":
        return None  # the start timer ran out: the output is back
    return cycle


def request_is_down(line: bytes) -> bool:
    """Whether the raw request line was the ``down`` command."""
    with contextlib.suppress(ValueError, AttributeError):
        return bool(json.loads(line).get("command") == "down")
    return False
