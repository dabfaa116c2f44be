"""The operating-system side of a lab node: a real sshd in its namespace and stand-in system commands.

Each node with SSH gets a directory (docs/lab.md, "What `mko lab up` builds")::

    NODE_DIR/
      sshd_config  ssh_host_ed25519_key  hosts  resolv.conf  launch.sh  sshd.log
      bin/         stand-in launchers; bind-mounted over /usr/local/sbin, and each one over the real
                   command's path when that exists (/usr/sbin/ethtool, /usr/bin/systemctl, …)
      etc-systemd-network/   bind-mounted over /etc/systemd/network (.link files land here)
      etc-systemd-system/    bind-mounted over /etc/systemd/system (unit files land here)
      home/        bind-mounted over /root: a fresh node's home (no shell start-up files of the host)
      state/       the node's simulated state, read and written by the stand-ins:
        calls.log      one JSON line per stand-in call (and per boot): {"t", "cmd", "argv"}
        nic.json       per interface: supported Wake-on modes, current Wake-on, driver default
        services.json  active and enabled systemd units
        nm.json        NetworkManager: running, devices, connections

sshd runs as ``ip netns exec NS unshare --uts --mount … sh launch.sh``: its own hostname, hosts file
and bind mounts, none of which reach the host. Commands run over SSH therefore see the stand-ins at
the real paths, so code under test runs exactly the argument lists it would run on a real machine.

The stand-ins are listed in :data:`STANDINS` (name, module, real paths, power hooks). Their code is
the package mko.lab.nodeside (standard library only): :class:`LabSsh` copies it to
``LAB/nodeside-py/nodeside/`` once per lab, and each node's ``bin/NAME`` is a three-line launcher that
runs ``nodeside.<module>.run`` under the node's system Python with the node's state directory
(``request_power("off" | "reboot")`` is carried out by the lab once the command returned: see
mko.lab.harness.PowerRequests); ``LAB`` holds state shared by every node (mko.lab.microk8s keeps the
simulated cluster there). A stand-in's ``on_boot`` / ``on_halt`` hooks run when a node boots or loses
power (what systemd would start at boot, what dies with the power). A new stand-in is one module in
mko.lab.nodeside plus one entry in :data:`STANDINS`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mko.lab.netns import LabNode, kill_netns_processes
from mko.lab.nodeside import cluster_state
from mko.platform.errors import LabError

__all__ = [
    "STANDINS",
    "LabSsh",
    "NodeSystem",
    "SshdService",
    "StandIn",
]

log = logging.getLogger(__name__)

PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
STANDIN_DIR = "/usr/local/sbin"  # first in sshd's default PATH for root, and empty on Debian
_SSHD_READY_TIMEOUT = 10.0
# Node directory → the path it is bind-mounted over inside the node (see mko.lab.nodefiles).
NODE_FILE_DIRS = {
    "var-snap-microk8s": "/var/snap/microk8s",
    "logind.conf.d": "/etc/systemd/logind.conf.d",
    "sudoers.d": "/etc/sudoers.d",
}
# The node's own accounts (a copy of the host's at first): a login user of its own for sudo tests.
NODE_ACCOUNT_FILES = ("passwd", "group", "shadow")
# Real binaries the lab needs: sshd itself, and ethtool so its stand-in can shadow /usr/sbin/ethtool.
_REQUIRED = {SSHD: "openssh-server", "/usr/sbin/ethtool": "ethtool", PYTHON: "python3"}


NODESIDE_DIR = "nodeside-py"  # under the lab's root: the copy of mko.lab.nodeside the nodes import


@dataclass(frozen=True)
class StandIn:
    """A command replaced inside lab nodes: its name, its module in mko.lab.nodeside, the real paths it
    shadows."""

    name: str
    module: str
    paths: tuple[str, ...] = ()
    # Called with the node's NodeSystem when it boots / when its power goes (after every process died).
    on_boot: Callable[[NodeSystem], None] | None = None
    on_halt: Callable[[NodeSystem], None] | None = None

    def launcher(self, state: Path, lab: Path) -> str:
        """The node's ``bin/NAME``: the system Python runs ``nodeside.MODULE.run`` on the node's STATE."""
        if not self.module.isidentifier():  # the names are mko's own, never user data
            raise ValueError(f"stand-in module {self.module!r} is not a module name")
        package = str(lab / NODESIDE_DIR)
        main = f"standin.main({str(state)!r}, {str(lab)!r}, {self.name!r}, {self.module}.run)"
        return (
            f"#!{PYTHON} -I\n"
            f"import sys; sys.path.insert(0, {package!r})\n"
            f"from nodeside import standin, {self.module}; raise SystemExit({main})\n"
        )


def _microk8s_boots(system: NodeSystem) -> None:
    # What systemd starts at boot: MicroK8s' services, unless `microk8s stop` disabled them.
    with cluster_state.Cluster(str(system.ssh.root)) as state:
        cluster_state.boot(state, system.hostname, time.time())


def _microk8s_halts(system: NodeSystem) -> None:
    with cluster_state.Cluster(str(system.ssh.root)) as state:
        cluster_state.halt(state, system.hostname, time.time())


STANDINS: tuple[StandIn, ...] = (
    StandIn("ethtool", "ethtool", ("/usr/sbin/ethtool", "/sbin/ethtool")),
    StandIn("systemctl", "systemctl", ("/usr/bin/systemctl", "/bin/systemctl")),
    StandIn("nmcli", "nmcli", ("/usr/bin/nmcli",)),
    StandIn(
        "microk8s",
        "microk8s",
        ("/snap/bin/microk8s",),
        on_boot=_microk8s_boots,
        on_halt=_microk8s_halts,
    ),
    StandIn("snap", "snap", ("/usr/bin/snap",)),
    StandIn("shutdown", "shutdown", ("/usr/sbin/shutdown", "/sbin/shutdown")),
)


def _copy_nodeside(lab: Path) -> None:
    """Copy the package mko.lab.nodeside to LAB/nodeside-py/nodeside, where the nodes' Python imports it."""
    # NOTE: a copy, not mko's own files: the nodes' system Python cannot import from mko's venv, and the
    # lab directory is what every node's mount namespace sees.
    target = lab / NODESIDE_DIR / "nodeside"
    target.mkdir(parents=True, exist_ok=True)
    for entry in importlib.resources.files("mko.lab.nodeside").iterdir():
        if entry.name.endswith(".py"):
            (target / entry.name).write_bytes(entry.read_bytes())


# ----------------------------------------------------------------------------- keys


def _generate_key(path: Path) -> str:
    """Write a new ed25519 private key (0600) in OpenSSH format; return its public key line."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    public: bytes = key.export_public_key("openssh")
    path.with_name(path.name + ".pub").write_bytes(public)
    return public.decode().strip()


@dataclass(frozen=True)
class LabSsh:
    """The lab-wide SSH material: one client key pair, authorized on every node as root."""

    root: Path
    port: int
    client_key: Path
    authorized_keys: Path

    @classmethod
    def create(cls, root: Path, port: int) -> LabSsh:
        """Make the client key pair and the authorized_keys file every node's sshd reads."""
        missing = [package for path, package in _REQUIRED.items() if not os.path.exists(path)]
        if missing:
            raise LabError(f"lab nodes with SSH need: apt-get install -y {' '.join(missing)}")
        root.mkdir(parents=True, exist_ok=True)
        client_key = root / "client_key"
        public = _generate_key(client_key)
        authorized = root / "authorized_keys"
        authorized.write_text(public + "\n")
        _copy_nodeside(root)
        # NOTE: sshd refuses to start without its privilege-separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        return cls(root, port, client_key, authorized)


# ----------------------------------------------------------------------------- one node's system


class NodeSystem:
    """One node's files, state and sshd launcher; see the module docstring for the layout."""

    def __init__(
        self,
        ssh: LabSsh,
        node: LabNode,
        *,
        hostname: str,
        hosts: Iterable[tuple[str, str]],
        nic_wol_supports: str = "pumbg",
        nic_wake_on_default: str | None = None,
        network_service: str = "none",
    ) -> None:
        if network_service not in ("none", "systemd-networkd", "NetworkManager"):
            raise LabError(f"network_service {network_service!r}: none, systemd-networkd or NetworkManager")
        self.ssh = ssh
        self.node = node
        self.hostname = hostname
        self.network_service = network_service
        self.dir = ssh.root / "nodes" / node.name
        self.bin = self.dir / "bin"
        self.state = self.dir / "state"
        self.etc_network = self.dir / "etc-systemd-network"
        self.etc_system = self.dir / "etc-systemd-system"
        self.home = self.dir / "home"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.sshd_config = self.dir / "sshd_config"
        self.launcher = self.dir / "launch.sh"
        self.log = self.dir / "sshd.log"
        self._lock = threading.Lock()
        for directory in (self.bin, self.state, self.etc_network, self.etc_system, self.home):
            directory.mkdir(parents=True, exist_ok=True)
        self.host_public_key = _generate_key(self.host_key)
        default = nic_wake_on_default or ("g" if "g" in nic_wol_supports else "d")
        self._save(
            "nic.json",
            {node.interface: {"supports": nic_wol_supports, "wake_on": default, "default": default}},
        )
        active = ["ssh.service"]
        if network_service != "none":
            active.append(f"{network_service}.service")
        self._save("services.json", {"active": active, "enabled": ["ssh.service"]})
        connection = "Wired connection 1"
        self._save(
            "nm.json",
            {
                "running": network_service == "NetworkManager",
                "devices": {node.interface: {"state": "100 (connected)", "connection": connection}},
                "connections": {connection: {"802-3-ethernet.wake-on-lan": "default"}},
            },
        )
        (self.state / "calls.log").touch()
        (self.dir / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            + "".join(f"{ip}\t{names}\n" for ip, names in hosts)
        )
        # No name server: lookups of unknown names fail at once instead of timing out.
        (self.dir / "resolv.conf").write_text("")
        self._write_standins()
        self._write_sshd_config()
        self._write_launcher()

    # ------------------------------------------------------------------ files

    def _save(self, name: str, value: Any) -> None:
        tmp = self.state / f".{name}.lab"
        tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
        os.replace(tmp, self.state / name)

    def _load(self, name: str) -> Any:
        return json.loads((self.state / name).read_text())

    def _write_standins(self) -> None:
        for standin in STANDINS:
            script = self.bin / standin.name
            script.write_text(standin.launcher(self.state, self.ssh.root))
            script.chmod(0o755)

    def _write_sshd_config(self) -> None:
        node = self.node
        self.sshd_config.write_text(
            f"Port {self.ssh.port}\n"
            f"ListenAddress {node.ip}\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.ssh.authorized_keys}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "MaxStartups 100:30:200\n"
            "MaxSessions 50\n"
            "Subsystem sftp internal-sftp\n"
        )

    def _mounts(self) -> list[tuple[str, str]]:
        """(source, target) bind mounts, in order; a stand-in shadows each real path that exists."""
        # NOTE: a bind mount needs an existing target; /etc/systemd/network is absent on hosts without
        # systemd-networkd, and an empty directory there changes nothing for the host.
        os.makedirs("/etc/systemd/network", exist_ok=True)
        mounts = [
            (str(self.dir / "hosts"), "/etc/hosts"),
            (str(self.dir / "resolv.conf"), "/etc/resolv.conf"),
            (str(self.bin), STANDIN_DIR),
            (str(self.etc_network), "/etc/systemd/network"),
            (str(self.etc_system), "/etc/systemd/system"),
            # NOTE: bash sources ~/.bashrc even for `ssh node cmd`; the host's (pyenv, cargo) costs
            # ~0.2 s per command, which a fresh node does not have.
            (str(self.home), "/root"),
        ]
        # Per-node files the host side writes (mko.lab.nodefiles: MicroK8s' args/kubelet, logind
        # drop-ins); the targets are made empty on the host first, as /etc/systemd/network above.
        for name, target in NODE_FILE_DIRS.items():
            os.makedirs(target, exist_ok=True)
            (self.dir / name).mkdir(exist_ok=True)
            mounts.append((str(self.dir / name), target))
        for name in NODE_ACCOUNT_FILES:
            own = self.dir / f"etc-{name}"
            if not own.exists():
                shutil.copy2(f"/etc/{name}", own)
            mounts.append((str(own), f"/etc/{name}"))
        for standin in STANDINS:
            for path in standin.paths:
                if os.path.isfile(path) and not os.path.islink(path):
                    mounts.append((str(self.bin / standin.name), path))
        return mounts

    def _write_launcher(self) -> None:
        lines = ["set -e"]
        lines += [f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in self._mounts()]
        lines.append(f"hostname {shlex.quote(self.hostname)}")
        lines.append(f"exec {SSHD} -D -e -f {shlex.quote(str(self.sshd_config))}")
        self.launcher.write_text("\n".join(lines) + "\n")

    def launch_argv(self) -> list[str]:
        """Return the command that starts this node's sshd in its own namespaces."""
        return [
            "ip", "netns", "exec", self.node.netns,
            "unshare", "--uts", "--mount", "--propagation", "private",
            "/bin/sh", str(self.launcher),
        ]  # fmt: skip

    # ------------------------------------------------------------------ state

    def calls(self, command: str | None = None) -> list[dict[str, Any]]:
        """Return the logged stand-in calls (and boots), oldest first, optionally of one command."""
        entries = [json.loads(line) for line in (self.state / "calls.log").read_text().splitlines() if line]
        return [e for e in entries if command is None or e["cmd"] == command]

    def nic(self, interface: str | None = None) -> dict[str, str]:
        """Return the NIC's Wake-on state: {"supports", "wake_on", "default"}."""
        nics: dict[str, dict[str, str]] = self._load("nic.json")
        return nics[interface or self.node.interface]

    def set_nic(self, interface: str | None = None, **values: str) -> None:
        """Change the simulated NIC (supports, wake_on, default)."""
        with self._lock:
            nics = self._load("nic.json")
            nics[interface or self.node.interface].update(values)
            self._save("nic.json", nics)

    def services(self) -> dict[str, list[str]]:
        """Return {"active": [...], "enabled": [...]} of the systemctl stand-in."""
        services: dict[str, list[str]] = self._load("services.json")
        return services

    def network_manager(self) -> dict[str, Any]:
        """Return the nmcli stand-in's state."""
        state: dict[str, Any] = self._load("nm.json")
        return state

    def take_power_request(self) -> str | None:
        """Return and clear what the node asked for from inside ("off", "reboot"), if anything."""
        path = self.state / "power.request"
        try:
            action = path.read_text().strip()
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        return action or None

    def magic_armed(self) -> bool:
        """Return whether the NIC would wake on a magic packet now (its Wake-on includes g)."""
        return "g" in self.nic()["wake_on"]

    def boot(self) -> None:
        """What booting does to the NIC: the driver default, then whatever persists its Wake-on."""
        with self._lock:
            nics = self._load("nic.json")
            for name, nic in nics.items():
                nic["wake_on"] = self._persisted_wake_on(name) or nic["default"]
                if any(c not in nic["supports"] for c in nic["wake_on"].replace("d", "")):
                    nic["wake_on"] = nic["default"]
            self._save("nic.json", nics)
            with (self.state / "calls.log").open("a") as log:
                log.write(json.dumps({"t": time.time(), "cmd": "<boot>", "argv": []}) + "\n")
        self._run_hooks("on_boot")

    def halt(self) -> None:
        """What losing power does to the node's simulated services (its processes are already gone)."""
        self._run_hooks("on_halt")

    def _run_hooks(self, which: str) -> None:
        for standin in STANDINS:
            hook = getattr(standin, which)
            if hook is None:
                continue
            try:
                hook(self)
            except Exception:
                log.exception("%s: %s hook of stand-in %s failed", self.node.netns, which, standin.name)

    def _persisted_wake_on(self, interface: str) -> str | None:
        # Boot order on a real machine: udev applies the first matching .link file, then units run,
        # then NetworkManager activates the connection; the last one to touch the NIC wins.
        result: str | None = None
        for link in sorted(self.etc_network.glob("*.link")):
            settings = _ini(link.read_text())
            match = settings.get("Match", {})
            if match.get("MACAddress", "").lower() in ("", self.node.mac) and match.get(
                "OriginalName", interface
            ) in (interface, "*"):
                value = settings.get("Link", {}).get("WakeOnLan")
                if value is not None:
                    result = "g" if "magic" in value.split() else "d"
                break
        enabled = self.services()["enabled"]
        for unit in sorted(self.etc_system.glob("*.service")):
            if unit.name not in enabled:
                continue
            command = _ini(unit.read_text()).get("Service", {}).get("ExecStart", "")
            argv = shlex.split(command.lstrip("-@:+!"))
            if len(argv) == 5 and argv[0].endswith("ethtool") and argv[1:3] == ["-s", interface]:
                result = argv[4] if argv[3] == "wol" else result
        nm = self.network_manager()
        if nm["running"]:
            connection = nm["devices"].get(interface, {}).get("connection")
            value = nm["connections"].get(connection, {}).get("802-3-ethernet.wake-on-lan")
            if value == "magic":
                result = "g"
            elif value == "none":
                result = "d"
        return result


def _ini(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return sections


# ----------------------------------------------------------------------------- sshd as a boot service


class SshdService:
    """Starts a node's sshd when it boots and kills everything on the node when it powers off."""

    def __init__(self, system: NodeSystem) -> None:
        self.system = system
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Boot the node's system and start sshd; return once it accepts connections."""
        self.system.boot()
        node = self.system.node
        with self.system.log.open("ab") as log:
            self._process = subprocess.Popen(
                self.system.launch_argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + _SSHD_READY_TIMEOUT
        while True:
            if self._process.poll() is not None:
                self._process = None
                tail = self.system.log.read_text(errors="replace")[-2000:]
                raise LabError(f"{node.netns}: sshd exited at start: {tail.strip()}")
            # The caller runs in the node's namespace, so this connects to the node's own sshd.
            with contextlib.suppress(OSError), socket.create_connection((node.ip, self.system.ssh.port), 0.2):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise LabError(
                    f"{node.netns}: sshd did not accept connections within {_SSHD_READY_TIMEOUT} s"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        """Power off: every process of the node (sshd, sessions, commands) dies; when this returns, the
        SSH port refuses connections."""
        node = self.system.node
        process, self._process = self._process, None
        deadline = time.monotonic() + 5
        while True:
            kill_netns_processes([node.netns], grace=1.0)
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            # On a loaded machine a process forked while the first sweep read /proc can still hold the
            # port: sweep again until nothing answers (the caller runs in the node's namespace).
            try:
                socket.create_connection((node.ip, self.system.ssh.port), 0.2).close()
            except OSError:
                break
            if time.monotonic() > deadline:
                raise LabError(f"{node.netns}: something still listens on the SSH port after power-off")
        self.system.halt()

    def alive(self) -> bool:
        """Return whether sshd is still running."""
        return self._process is not None and self._process.poll() is None
