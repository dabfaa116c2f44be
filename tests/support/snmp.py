"""A real SNMP agent for the PDU driver's tests: snmpsim (the SNMP agent simulator) serving the outlet
tables of an APC, an Eaton and a Raritan PDU from tests/support/snmpsim/data, with the writable outlet
model of tests/support/snmpsim/variation/pdu.py.

The data file answers the v2c community of its name (``apc``, ``eaton``, ``raritan``) and the SNMPv3
context of the same name; the v3 user ``mko`` has SHA authentication and AES privacy.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import snmpsim

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

    def __init__(self, workdir: Path, reboot_seconds: float = 1.0) -> None:
        self.port = _free_udp_port()
        stock = Path(snmpsim.__file__).parent / "variation"
        argv = [
            str(Path(sys.executable).with_name("snmpsim-command-responder")),
            f"--variation-modules-dir={HERE / 'variation'}",
            f"--variation-modules-dir={stock}",
            f"--variation-module-options=pdu:reboot={reboot_seconds},initial=on",
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
            if self._answers():
                return
            time.sleep(0.2)
        raise TimeoutError("snmpsim did not answer within 60 s")

    def _answers(self) -> bool:
        from pysnmp.hlapi.v3arch import asyncio as hl

        async def get() -> bool:
            engine = hl.SnmpEngine()
            try:
                target = await hl.UdpTransportTarget.create(("127.0.0.1", self.port), timeout=0.3, retries=0)
                indication, _status, _index, _binds = await hl.get_cmd(
                    engine,
                    hl.CommunityData("apc", mpModel=1),  # noqa: S508 - the simulator speaks v2c
                    target,
                    hl.ContextData(),
                    hl.ObjectType(hl.ObjectIdentity("1.3.6.1.2.1.1.2.0")),
                )
                return not indication
            finally:
                engine.close_dispatcher()

        return asyncio.run(get())

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
