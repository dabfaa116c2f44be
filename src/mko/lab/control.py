"""The lab a person runs (``mko lab up``): where it lives on disk, its settings, and how to talk to it.

A lab is one directory (``MKO_LAB_DIR``, default ``data/lab``). While it is up, a lab daemon
(:mod:`mko.lab.daemon`) owns its namespaces, node sshds, UPS and power simulation and answers on the
Unix socket ``control.sock`` with one JSON request and one JSON reply per connection. ``lab.json`` is
the daemon's own record of the lab (only the daemon writes it), so a person can see what is running
even when the daemon is gone. The CLI, ``mko serve --lab`` and the web UI's lab page all go through
:class:`LabControl`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.errors import ConflictError, InputError, LabError, LabNotUpError
from mko.platform.settings import Settings

__all__ = [
    "FLAP_MIN_PERIOD",
    "LAB_PORT",
    "LAB_UPS",
    "LabControl",
    "LabPaths",
    "check_battery",
    "check_flap",
    "lab_settings",
    "lab_status",
    "pid_alive",
]

LAB_PORT = 8470  # where `mko lab up` and `mko serve --lab` serve the lab unless told otherwise
LAB_UPS = "lab-ups"  # mko's name of the lab's UPS
FLAP_MIN_PERIOD = 2.0  # dummy-ups sees a change only when its file's mtime moves on by a whole second
_REPLY_TIMEOUT = 60.0


def check_battery(percent: float) -> None:
    """InputError unless ``percent`` is a charge (0-100); checked by the client and again by the daemon."""
    if not 0 <= percent <= 100:
        raise InputError("percent", "must be between 0 and 100")


def check_flap(seconds: float, period: float) -> None:
    """InputError naming ``seconds`` or ``period`` when a flap cannot be done."""
    if not 1 <= seconds <= 3600:
        raise InputError("seconds", "must be between 1 and 3600")
    if not FLAP_MIN_PERIOD <= period <= 600:
        raise InputError("period", f"must be between {FLAP_MIN_PERIOD:g} and 600 seconds")


@dataclass(frozen=True)
class LabPaths:
    """Every file of a lab, all inside its directory."""

    directory: Path

    @classmethod
    def of(cls, directory: Path) -> LabPaths:
        """The paths of the lab in ``directory`` (made absolute: the daemon changes nothing else)."""
        return cls(directory.absolute())

    @property
    def state(self) -> Path:
        """Return lab.json, the daemon's record of the lab."""
        return self.directory / "lab.json"

    @property
    def control(self) -> Path:
        """Return the daemon's Unix socket."""
        return self.directory / "control.sock"

    @property
    def database(self) -> Path:
        """Return the lab's own SQLite database (never the real one)."""
        return self.directory / "lab.db"

    @property
    def admin_password(self) -> Path:
        """Return the file (0600) holding the lab admin's generated password."""
        return self.directory / "admin-password"

    @property
    def system(self) -> Path:
        """Return the nodes' files: host keys, stand-ins and their state, the client key."""
        return self.directory / "system"

    @property
    def nut(self) -> Path:
        """Return upsd's and dummy-ups' configuration, state and logs."""
        return self.directory / "nut"

    @property
    def daemon_log(self) -> Path:
        """Return the daemon's log."""
        return self.directory / "daemon.log"

    @property
    def server_log(self) -> Path:
        """Return the lab orchestrator's console output (its log proper is logs/orchestrator.log)."""
        return self.directory / "server.log"

    def read_state(self) -> dict[str, Any] | None:
        """Return lab.json, or None when there is none."""
        try:
            state: dict[str, Any] = json.loads(self.state.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LabError(f"{self.state} is unreadable: {exc}") from exc
        return state


def lab_settings(paths: LabPaths, base: Settings) -> Settings:
    """The settings of the lab's orchestrator: its own database, keys and logs, demo-friendly timings.

    Timings are shorter than a real site's (poll the UPS twice a second, probe five times a second) so
    a whole cycle takes seconds; everything else is the person's own settings — except mko's own host:
    the lab's orchestrator never shuts this machine down. With ``--orchestrator-on-ups`` (lab.json) its
    host is on the lab's UPS, and its "host shutdown" asks the lab daemon to halt it (``host-halt``).
    """
    directory = paths.directory
    try:
        spec = (paths.read_state() or {}).get("spec") or {}
    except LabError:
        spec = {}
    on_ups = bool(spec.get("orchestrator_on_ups"))
    halt = [sys.executable, "-m", "mko", "lab", "host-halt", "--dir", str(directory)]
    return base.model_copy(
        update={
            "host_ups": LAB_UPS if on_ups else None,
            "host_shutdown_command": halt if on_ups else [],
            "powerdown_flag": directory / "powerdown.flag",
            "database_url": f"sqlite:///{paths.database}",
            "log_dir": directory / "logs",
            "ssh_known_hosts": directory / "known_hosts",
            "ssh_default_key": paths.system / "client_key",
            "secret_key_file": directory / "secret.key",
            "secret_key": None,
            "admin_password": None,
            "ups_monitor_lock_file": directory / "ups-monitor.lock",
            "backup_dir": directory / "backups",
            "ansible_inventory_path": directory / "ansible" / "inventory.yml",
            "ansible_facts_dir": directory / "ansible" / "facts",
            "ups_poll_interval": 0.5,
            "ups_reload_interval": 1.0,
            "probe_interval": 0.2,
            "wol_default_delay": 0.5,
            "rule_wake_timeout": 60.0,
            "reachability_interval": 2.0,
            "ssh_connect_timeout": 5.0,
            "poweroff_timeout": 30.0,
            "recovery_timeout": 60.0,
            # runtime_low at the lab's scale: a shutdown takes seconds here, not minutes.
            "runtime_low_unmeasured": 10.0,
            "runtime_low_margin": 5.0,
        }
    )


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists (and is not a zombie we could reap)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


class LabControl:
    """Talks to the daemon of the lab in ``paths``; every method raises LabNotUpError when none answers."""

    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths

    def request(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send one command; return the reply; raise the daemon's error in its branch of the tree."""
        if not self.paths.control.exists():
            raise LabNotUpError(f"no lab is up in {self.paths.directory}: run `sudo mko lab up`")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(_REPLY_TIMEOUT)
                sock.connect(str(self.paths.control))
                sock.sendall(json.dumps({"command": command, **arguments}).encode() + b"\n")
                with sock.makefile("rb") as stream:
                    line = stream.readline()
        except OSError as exc:
            raise LabNotUpError(
                f"the lab daemon of {self.paths.directory} does not answer ({exc}); `mko lab down` cleans up"
            ) from exc
        if not line:
            raise LabNotUpError(f"the lab daemon of {self.paths.directory} closed the connection")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok", False):
            kind, message = reply.get("kind"), str(reply.get("error", "unknown error"))
            if kind == "input":
                raise InputError(str(reply.get("field", "input")), message)
            if kind == "conflict":
                raise ConflictError(message)
            raise LabError(message)
        return reply

    def status(self) -> dict[str, Any]:
        """Nodes (power, MicroK8s, Ready, cordoned), the UPS as upsd serves it, a running flap."""
        return self.request("status")

    def power_fail(self) -> dict[str, Any]:
        """Mains fails: the UPS goes on battery (OB DISCHRG); returns once upsd serves it."""
        return self.request("power-fail")

    def power_restore(self) -> dict[str, Any]:
        """Mains returns: the UPS goes on line and charges (OL CHRG); returns once upsd serves it."""
        return self.request("power-restore")

    def battery(self, percent: float) -> dict[str, Any]:
        """Set the battery charge; on battery at 0 % the UPS dies and every node still on loses power."""
        check_battery(percent)
        return self.request("battery", percent=percent)

    def flap(self, seconds: float, period: float = FLAP_MIN_PERIOD) -> dict[str, Any]:
        """Toggle mains every ``period`` seconds for ``seconds``, ending on line; returns at once."""
        check_flap(seconds, period)
        return self.request("flap", seconds=seconds, period=period)

    def host_halt(self) -> dict[str, Any]:
        """The lab orchestrator's host shuts down for power: the server stops and stays down until the
        UPS output goes off and comes back (returns at once; the daemon stops it a moment later)."""
        return self.request("host-halt")

    def kill_server(self) -> dict[str, Any]:
        """The orchestrator's host loses power (SIGKILL); it stays down until ``start_server``."""
        return self.request("kill-server")

    def start_server(self) -> dict[str, Any]:
        """Boot the orchestrator's host: start ``mko serve --lab`` again; returns once it serves."""
        return self.request("start-server")

    def register_server(self, pid: int, url: str) -> dict[str, Any]:
        """Tell the daemon a ``mko serve --lab`` now serves the lab (it refuses a second one)."""
        return self.request("register-server", pid=pid, url=url)

    def down(self) -> dict[str, Any]:
        """Ask the daemon to tear everything down; it replies first, then exits."""
        return self.request("down")


def _operation_doc(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "kind": op.kind,
        "status": op.status.value,
        "actor": op.actor,
        "summary": op.summary,
        "started_at": op.started_at.isoformat() if op.started_at else None,
        "finished_at": op.finished_at.isoformat() if op.finished_at else None,
    }


def lab_status(control: LabControl, session: Session, *, latest: int = 5) -> dict[str, Any]:
    """The daemon's status plus the lab database's running and latest operations."""
    status = control.status()
    newest = select(Operation).order_by(Operation.id.desc())
    status["operations"] = [_operation_doc(op) for op in session.scalars(newest.limit(latest))]
    running = newest.where(Operation.status.in_((OperationStatus.PENDING, OperationStatus.RUNNING)))
    status["running"] = [_operation_doc(op) for op in session.scalars(running)]
    return status
