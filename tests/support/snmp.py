"""A real SNMP agent for the PDU driver's tests: snmpsim (the SNMP agent simulator) serving the outlet
tables of an APC, an Eaton and a Raritan PDU from tests/support/snmpsim/data, with the writable outlet
model of tests/support/snmpsim/variation/pdu.py.

The data file answers the v2c community of its name (``apc``, ``eaton``, ``raritan``) and the SNMPv3
context of the same name; the v3 user ``mko`` has SHA authentication and AES privacy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import snmpsim

from mko.lab.netns import enter_netns

__all__ = ["SnmpSim"]

HERE = Path(__file__).parent / "snmpsim"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SnmpSim:
    """snmpsim-command-responder on 127.0.0.1:<free UDP port>; ``stop()`` ends it."""

    USER, AUTH_KEY, PRIV_KEY = "mko", "authpass123", "privpass123"

    def __init__(
        self, workdir: Path, reboot_seconds: float = 1.0, *, netns: str | None = None, initial: str = "on"
    ) -> None:
        self.netns = netns
        with enter_netns(netns) if netns else contextlib.nullcontext():
            self.port = _free_udp_port()
        stock = Path(snmpsim.__file__).parent / "variation"
        self.set_log = workdir / "sets.log"
        inside = ["ip", "netns", "exec", netns] if netns else []  # ip execs the program: same pid
        argv = [
            *inside,
            str(Path(sys.executable).with_name("snmpsim-command-responder")),
            f"--variation-modules-dir={HERE / 'variation'}",
            f"--variation-modules-dir={stock}",
            f"--variation-module-options=pdu:reboot={reboot_seconds},initial={initial},log={self.set_log}",
            f"--cache-dir={workdir / 'cache'}",
            f"--logging-method=file:{workdir / 'snmpsim.log'}",
            "--log-level=error",
            "--v3-engine-id=auto",  # starts the engine's section: the options below belong to it
            f"--v3-user={self.USER}",
            f"--v3-auth-key={self.AUTH_KEY}",
            "--v3-auth-proto=SHA",
            f"--v3-priv-key={self.PRIV_KEY}",
            "--v3-priv-proto=AES",
            f"--data-dir={HERE / 'data'}",
            f"--agent-udpv4-endpoint=127.0.0.1:{self.port}",
        ]
        # snmpsim refuses to run as root unless told it may (the tests run as root in CI).
        env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """Until the agent answers a GET of sysObjectID (snmpsim indexes its data files first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                assert self.process.stderr is not None
                raise RuntimeError("snmpsim ended: " + self.process.stderr.read().decode()[-2000:])
            with enter_netns(self.netns) if self.netns else contextlib.nullcontext():
                if self._answers():
                    return
            time.sleep(0.2)
        raise TimeoutError("snmpsim did not answer within 60 s")

    def _answers(self) -> bool:
        return self._get("1.3.6.1.2.1.1.2.0") is not None

    def _get(self, oid: str) -> object | None:
        """One v2c GET on the APC table (from the caller's namespace); None when nothing answers."""
        from pysnmp.hlapi.v3arch import asyncio as hl

        async def get() -> object | None:
            engine = hl.SnmpEngine()
            try:
                target = await hl.UdpTransportTarget.create(("127.0.0.1", self.port), timeout=0.3, retries=0)
                indication, status, _index, binds = await hl.get_cmd(
                    engine,
                    hl.CommunityData("apc", mpModel=1),  # noqa: S508 - the simulator speaks v2c
                    target,
                    hl.ContextData(),
                    hl.ObjectType(hl.ObjectIdentity(oid)),
                )
                return None if indication or status else binds[0][1]
            finally:
                engine.close_dispatcher()

        return asyncio.run(get())

    def sets(self) -> list[tuple[float, str, int]]:
        """Every SET the agent applied: (time.monotonic(), OID, value), oldest first."""
        if not self.set_log.exists():
            return []
        entries = []
        for line in self.set_log.read_text().splitlines():
            at, oid, value = line.split()
            entries.append((float(at), oid, int(value)))
        return entries

    def apc_outlet_on(self, outlet: int) -> bool | None:
        """What the APC PDU says of an outlet (its command OID reads 1 on, 2 off); None: no answer."""
        with enter_netns(self.netns) if self.netns else contextlib.nullcontext():
            value = self._get(f"1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.{outlet}")
        return None if value is None else {1: True, 2: False}.get(int(value))  # type: ignore[call-overload]

    def stop(self) -> None:
        """End the agent (only the process this object started)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stderr is not None:
            self.process.stderr.close()
