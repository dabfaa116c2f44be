"""`mko serve` as a real process (uvicorn, real sockets) inside a network namespace, for e2e tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mko.lab.netns import enter_netns
from mko.platform.settings import Settings

__all__ = ["ServeProcess"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServeProcess:
    """A running `mko serve` in ``netns``; its output goes to ``log``."""

    url: str
    netns: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        netns: str,
        settings: Settings,
        log: Path,
        env: Mapping[str, str] | None = None,
        port: int = 18080,
    ) -> Iterator[ServeProcess]:
        """Start it on the database of ``settings`` (the environment the settings fixture set), wait
        until it listens, and stop it (SIGTERM, as systemd would) when the block ends."""
        environment = os.environ | {
            "MKO_DATABASE_URL": settings.database_url,
            "MKO_LOG_DIR": str(settings.log_dir),
            **(env or {}),
        }
        command = ["ip", "netns", "exec", netns, sys.executable, "-m", "mko", "serve", "--port", str(port)]
        with log.open("wb") as output:
            process = subprocess.Popen(command, env=environment, cwd=ROOT, stdout=output, stderr=output)
        server = cls(f"http://127.0.0.1:{port}", netns, process, log)
        try:
            server._wait_listening(port)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def check_alive(self) -> None:
        """Fail with the server's output when it has exited."""
        if self.process.poll() is not None:
            raise AssertionError(f"mko serve exited {self.process.returncode}:\n{self.output()}")

    def output(self) -> str:
        """The end of what the server printed."""
        return self.log.read_text(errors="replace")[-4000:]

    def _wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            self.check_alive()
            try:
                with enter_netns(self.netns):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"mko serve did not listen within 30 s:\n{self.output()}") from None
                time.sleep(0.1)
