"""Real or wire-faithful peers for the power drivers, started by the tests that use them.

* :class:`PveServer` — ``fakepve``, an HTTPS fake of the Proxmox VE API (real paths, JSON shapes, UPIDs,
  task status, ``PVEAPIToken`` header), served from a thread of this process; optionally inside a
  network namespace so an orchestrator running there reaches it on that namespace's 127.0.0.1.
* :class:`IpmiSim` — OpenIPMI's ``ipmi_sim`` on a loopback UDP port; its chassis-control script keeps
  the simulated power state in a file and logs every request.
* :class:`RedfishEmulator` — sushy-tools' ``sushy-emulator`` (fake driver) over TLS with Basic auth,
  via a launcher that takes out its random 1-11 s power-change delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fakepve import FakePve, settle
from fakepve.certs import make_cert

from mko.lab.harness import RunningNode
from mko.lab.netns import enter_netns

LAUNCHER = Path(__file__).with_name("sushy_launcher.py")
log = logging.getLogger(__name__)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed(directory: Path, name: str = "bmc") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


class HostPve(FakePve):  # type: ignore[misc]
    """fakepve whose ``POST /nodes/{node}/status command=shutdown`` really shuts the host down, as
    pve-manager does (``sleep 2; poweroff``): every guest stops, then the API stops listening, until
    :meth:`power_on` boots it again on the same port. The request itself is checked by fakepve first
    (the command enum, Sys.PowerMgmt)."""

    shutdown_delay = 0.2  # real seconds between the answer and the API going away

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.powered = True
        self.power_log: list[tuple[str, str]] = []  # (command, node), in order
        self.on_power_off: Callable[[], None] | None = None  # the chassis loses power (the BMC sees it)
        self._pem: tuple[str, str] | None = None

    async def synthesise(self, match: Any, method: str, info: Any, user: Any, values: dict[str, Any]) -> Any:
        if method == "POST" and match.template == "/nodes/{node}/status":
            node, command = values["node"], values["command"]
            self.power_log.append((command, node))
            for vm in self.vms:  # pve-guests.service stops every guest first
                if vm.node == node:
                    vm.status = "stopped"
            loop = asyncio.get_running_loop()
            loop.call_later(self.shutdown_delay, lambda: loop.create_task(self._power_off()))
            return None  # PVE answers {"data": null}
        return await super().synthesise(match, method, info, user, values)

    async def _power_off(self) -> None:
        self.powered = False
        await self.stop()  # connections are refused now, as by a host that is off
        if self.on_power_off is not None:
            self.on_power_off()

    async def start(self, certfile: str, keyfile: str) -> None:
        self._pem = (certfile, keyfile)
        await super().start(certfile, keyfile)
        self.powered = True
        self.requests.append(("BOOT", "", None))  # where the boot falls among the requests answered

    async def power_on(self) -> None:
        """The host booted: pveproxy listens again."""
        assert self._pem is not None
        if not self.powered:
            await self.start(*self._pem)

    async def cut_power(self) -> None:
        """The host lost power without shutting down (a hard off)."""
        if self.powered:
            self.powered = False
            await self.stop()


class PveServer:
    """A started fakepve on 127.0.0.1 (of ``netns`` when given), accepting one API token."""

    TOKEN_ID = "mko@pve!power"
    TOKEN_SECRET = "3f1b2c9e-7d41-4b8e-a0c2-5e6f7a8b9c0d"
    fake: type[FakePve] = FakePve

    def __init__(self, directory: Path, netns: str | None = None) -> None:
        self.cafile, keyfile, der = make_cert(str(directory), hosts=("127.0.0.1",))
        self.fingerprint = der  # DER bytes; tests hash them to pin
        self.pve = self.fake(host="127.0.0.1", port=0)
        self.pve.time_scale = 0  # tasks finish at once; the client still follows their UPIDs
        self.pve.apitokens[self.TOKEN_ID] = self.TOKEN_SECRET
        self.loop = asyncio.new_event_loop()
        with enter_netns(netns) if netns else contextlib.nullcontext():
            # The thread inherits the namespace; the listening socket is made in it.
            self.thread = threading.Thread(target=self.loop.run_forever, name="fakepve", daemon=True)
            self.thread.start()
        asyncio.run_coroutine_threadsafe(self.pve.start(self.cafile, keyfile), self.loop).result(30)

    @property
    def port(self) -> int:
        """The port the fake listens on."""
        port: int = self.pve.port
        return port

    def stop(self) -> None:
        """Stop serving and end the thread."""
        try:
            asyncio.run_coroutine_threadsafe(settle(), self.loop).result(30)
            asyncio.run_coroutine_threadsafe(self.pve.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()

    def status(self, vmid: int) -> str:
        """What the fake says a guest's status is."""
        status: str = self.pve.guest(vmid).status
        return status

    def calls(self) -> list[tuple[str, str]]:
        """Every request the fake answered, as (method, path), oldest first."""
        return [(method, path) for method, path, _body in self.pve.requests]


_CHASSIS = """#!/bin/sh
# ipmi_sim chassis_control: chassis.sh STATEFILE get power | set power 0|1 | set shutdown 1
state="$1"; shift
echo "$*" >> "$state.log"
case "$1" in
  get)
    shift; out=""
    for p in "$@"; do
      if [ "$p" = power ]; then out="$out power:$(cat "$state")"; else out="$out $p:0"; fi
    done
    echo $out;;
  set)
    shift
    while [ $# -gt 1 ]; do
      case "$1" in
        power) echo "$2" > "$state";;
        shutdown) echo 0 > "$state";;  # the OS answered the ACPI power button and went down
      esac
      shift 2
    done;;
esac
"""


class HostPveServer(PveServer):
    """A Proxmox VE host on its machine: when the machine gets power (``chassis_on`` turns true: its BMC
    switched it on, or a magic packet booted its lab node) the host boots, and its API answers
    ``boot_delay`` seconds later; when PVE shuts it down, ``power_off`` takes the machine's power away,
    and when the machine loses power otherwise, the API goes away with it."""

    fake = HostPve

    def __init__(
        self,
        directory: Path,
        chassis_on: Callable[[], bool],
        power_off: Callable[[], None],
        *,
        netns: str | None = None,
        boot_delay: float = 0.5,
    ) -> None:
        super().__init__(directory, netns=netns)
        self.chassis_on = chassis_on
        self.boot_delay = boot_delay
        self.boots = 0
        self.pve.on_power_off = power_off
        self._run(self.pve.cut_power())
        if chassis_on():
            self._run(self.pve.power_on())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow_the_chassis, name="pve-host-power", daemon=True)
        self._thread.start()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    @property
    def powered(self) -> bool:
        """Whether the host is up (its API listens)."""
        return bool(self.pve.powered)

    def _follow_the_chassis(self) -> None:
        while not self._stop.wait(0.05):
            chassis_on = self.chassis_on()
            if chassis_on and not self.pve.powered:
                time.sleep(self.boot_delay)  # BIOS, kernel, pveproxy
                self._run(self.pve.power_on())
                self.boots += 1
            elif not chassis_on and self.pve.powered:
                self._run(self.pve.cut_power())

    def stop(self) -> None:
        """Stop following the chassis, then the fake."""
        self._stop.set()
        self._thread.join(10)
        self._run(self.pve.power_on())  # PveServer.stop settles and stops a listening fake
        super().stop()


class IpmiSim:
    """OpenIPMI's ipmi_sim with one admin user, on 127.0.0.1:<port>/udp."""

    USER, PASSWORD = "admin", "ipmi-Pa55"

    def __init__(self, directory: Path, netns: str | None = None, *, power: str = "0") -> None:
        if shutil.which("ipmi_sim") is None:
            raise RuntimeError("ipmi_sim is missing: apt-get install -y openipmi (make test-system-deps)")
        self.netns = netns
        self.port = free_port(socket.SOCK_DGRAM)
        self.state = directory / "power.state"
        self.state.write_text(f"{power}\n")
        script = directory / "chassis.sh"
        script.write_text(_CHASSIS)
        script.chmod(0o755)
        (directory / "sim").mkdir()
        (directory / "lan.conf").write_text(
            f"""name "bmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {self.port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{script} {self.state}"
  user 2 true "{self.USER}" "{self.PASSWORD}" admin 10 none md2 md5 straight
"""
        )
        (directory / "bmc.emu").write_text(
            "mc_setbmc 0x20\n"
            "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
            "sel_enable 0x20 1000 0x0a\n"
            "mc_enable 0x20\n"
        )
        self.output = (directory / "ipmi_sim.out").open("wb")
        self.process = subprocess.Popen(
            [
                *_in_netns(netns),
                "ipmi_sim",
                "-c",
                "lan.conf",
                "-f",
                "bmc.emu",
                "-s",
                str(directory / "sim"),
                "-n",
            ],
            cwd=directory,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ipmi_sim exited with {self.process.returncode}")
            with _netns(self.netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", self.port))
                except OSError:
                    return  # taken: the simulator has bound its LAN port
            time.sleep(0.05)
        raise RuntimeError("ipmi_sim did not open its LAN port")

    @property
    def power(self) -> str:
        """The simulated chassis power: "1" on, "0" off."""
        return self.state.read_text().strip()

    @property
    def requests(self) -> list[str]:
        """Every chassis-control request the simulator made, oldest first."""
        log = self.state.with_name(self.state.name + ".log")
        return log.read_text().splitlines() if log.exists() else []

    def stop(self) -> None:
        """Stop the simulator."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.output.close()


class RedfishEmulator:
    """sushy-emulator with one fake system (``server1``, off) over TLS and Basic auth."""

    USER, PASSWORD = "redfish-admin", "rf-Pa55word"
    SYSTEM_ID = "6a3e7b2c-1f0d-4c55-9e8a-2b7c4d5e6f70"

    def __init__(
        self,
        directory: Path,
        netns: str | None = None,
        *,
        power_state: str = "Off",
        restore_policy: str | None = None,
    ) -> None:
        """``restore_policy``: the PowerRestorePolicy its system reports (None: absent, as in sushy-tools)."""
        import bcrypt

        self.netns = netns
        self.cafile, keyfile = self_signed(directory)
        self.port = free_port()
        hashed = bcrypt.hashpw(self.PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        (directory / "htpasswd").write_text(f"{self.USER}:{hashed}\n")
        systems = [{"uuid": self.SYSTEM_ID, "name": "server1", "power_state": power_state, "nics": []}]
        config = directory / "emulator.conf"
        config.write_text(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(directory / 'state')!r}\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(directory / 'htpasswd')!r}\n"
        )
        self.url = f"https://127.0.0.1:{self.port}"
        self.output = (directory / "emulator.out").open("wb")
        command = [
            *_in_netns(netns),
            sys.executable,
            str(LAUNCHER),
            "--config",
            str(config),
            "-i",
            "127.0.0.1",
        ]
        command += ["-p", str(self.port), "--ssl-certificate", str(self.cafile), "--ssl-key", str(keyfile)]
        self.reset_log = directory / "resets.log"
        self.process = subprocess.Popen(
            command,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=os.environ
            | {"SUSHY_RESET_LOG": str(self.reset_log), "SUSHY_POWER_RESTORE_POLICY": restore_policy or ""},
        )
        self._wait_ready()

    @property
    def resets(self) -> list[str]:
        """The ResetTypes the emulated system received, oldest first."""
        if not self.reset_log.exists():
            return []
        return [line.split()[-1] for line in self.reset_log.read_text().splitlines()]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                _netns(self.netns),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("sushy-emulator did not start listening")

    def system(self) -> dict[str, Any]:
        """The emulated system as the emulator shows it (read with its own CA and credentials)."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        with _netns(self.netns):
            response = httpx.get(
                f"{self.url}/redfish/v1/Systems/{self.SYSTEM_ID}",
                auth=(self.USER, self.PASSWORD),
                verify=context,
                timeout=5,
            )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def stop(self) -> None:
        """Stop the emulator."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.output.close()


def _in_netns(netns: str | None) -> list[str]:
    """The command prefix that starts a peer in ``netns`` (``ip netns exec`` execs it: same pid)."""
    return ["ip", "netns", "exec", netns] if netns else []


def _netns(netns: str | None) -> contextlib.AbstractContextManager[None]:
    return enter_netns(netns) if netns else contextlib.nullcontext()


class PowerCoupling:
    """The machines behind the fakes: a lab node loses power when its hypervisor or BMC turns it off,
    and boots when it turns it on.

    ``links`` pairs a lab node with a reading of its fake's power (True on, False off, None unknown); a
    thread (in ``netns``, where the fakes answer) reads them every ``interval`` and follows every
    change by pressing the lab node's button, as the real VM or chassis would go down or come up.
    """

    def __init__(
        self, links: list[tuple[RunningNode, Callable[[], bool | None]]], netns: str, interval: float = 0.05
    ) -> None:
        self.links = links
        self.netns = netns
        self.interval = interval
        self.changes: list[tuple[str, str]] = []  # (hostname, "on" | "off"), in order
        self.times: list[float] = []  # time.monotonic() of each change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power-coupling", daemon=True)

    def __enter__(self) -> PowerCoupling:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with enter_netns(self.netns):
            last = {node.hostname: read() for node, read in self.links}
            while not self._stop.wait(self.interval):
                for node, read in self.links:
                    try:
                        now = read()
                    except Exception as exc:  # a fake busy for a moment: read it again next time
                        log.info("power coupling: reading %s failed: %s", node.hostname, exc)
                        continue
                    if now is None or now == last[node.hostname]:
                        continue
                    last[node.hostname] = now
                    self.changes.append((node.hostname, "on" if now else "off"))
                    self.times.append(time.monotonic())
                    if now:
                        node.power.power_on()
                    else:
                        node.power.power_off()


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
