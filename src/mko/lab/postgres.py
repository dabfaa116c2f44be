"""A throwaway PostgreSQL server for tests and benchmarks: its own cluster, reachable on a Unix socket only.

``initdb`` and ``postgres`` run as the ``postgres`` system user (the server refuses root) in a private
directory under /tmp that holds both the data and the socket, so nothing touches the machine's own
clusters or any TCP port. Needs root and the Debian ``postgresql`` package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from mko.platform.errors import PostgresError

__all__ = ["PostgresServer", "find_bindir"]

_PORT = 5432  # only names the socket file (.s.PGSQL.5432) inside our private directory
_USER = "postgres"
# No TCP at all (listen_addresses empty); durability traded for speed, as befits a scratch server.
_FAST = ("-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off")
_INITDB = ("-E", "UTF8", "--locale=C", "--no-sync")


def find_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise PostgresError(
            "no PostgreSQL server installed (/usr/lib/postgresql/*/bin/postgres): install the postgresql"
            " package (`make test-system-deps` does)"
        )
    return candidates[-1].parent


class PostgresServer:
    """``start()`` (or ``with``), then ``create_database(name)`` per test; ``stop()`` removes everything."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's Unix socket."""
        if self.root is None:
            raise PostgresError("the server is not started")
        return self.root

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{_USER}@/{database}?host={self.socket_dir}"

    def start(self, timeout: float = 60.0) -> None:
        """initdb a new cluster and start the server; returns once it accepts connections."""
        if os.geteuid() != 0:
            raise PostgresError("starting a test PostgreSQL server needs root (it runs as the postgres user)")
        bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="mko-pg-"))
        shutil.chown(self.root, _USER, _USER)
        data = self.root / "data"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", _USER, *_INITDB],
            user=_USER,
            group=_USER,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if initdb.returncode != 0:
            self.stop()
            raise PostgresError(f"initdb failed: {initdb.stderr.strip()}")
        log = (self.root / "server.log").open("wb")
        self._process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-k", str(self.root), "-p", str(_PORT), *_FAST],
            user=_USER,
            group=_USER,
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                output = (self.socket_dir / "server.log").read_text(errors="replace")
                self.stop()
                raise PostgresError(f"postgres exited at start: {output.strip()[-2000:]}")
            try:
                with psycopg.connect(host=str(self.socket_dir), port=_PORT, user=_USER, dbname="postgres"):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PostgresError(
                        f"postgres did not accept connections within {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database, empty or a copy of database ``template`` (which nobody may be connected
        to), and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        with psycopg.connect(
            host=str(self.socket_dir), port=_PORT, user=_USER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(statement)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown: roll back sessions, then exit
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        root, self.root = self.root, None
        if root is not None:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(root)
