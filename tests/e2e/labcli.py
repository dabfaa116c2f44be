"""`mko lab …` as a person runs it, for the end-to-end lab tests: commands, status, the lab's files.

Every command is a subprocess of the real `mko` against one lab directory, with the environment a person
would have; the helpers read only what `mko lab status --json`, the lab's files (its database, the
nodes' call logs, upsd's log) and the machine itself (namespaces, processes) say.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mko.lab.control import pid_alive
from mko.lab.netns import list_netns

ROOT = Path(__file__).resolve().parents[2]
MKO = [sys.executable, "-m", "mko"]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LabCli:
    """`mko lab …` against one lab directory, with the environment a person would have."""

    def __init__(self, directory: Path, prefix: str, port: int, env: dict[str, str]) -> None:
        self.directory = directory
        self.prefix = prefix
        self.port = port
        self.env = env

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*MKO, "lab", *args, "--dir", str(self.directory)],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"mko lab {' '.join(args)}: {result.stderr}{result.stdout}"
        return result

    def up(self, *options: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "up",
            "--nodes",
            "3",
            "--control-planes",
            "1",
            "--shutdown-delay",
            "1",
            "--boot-delay",
            "0.3",
            "--prefix",
            self.prefix,
            "--port",
            str(self.port),
            *options,
        )

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.run("status", "--json").stdout)
        return doc

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if predicate(status):
                return status
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {json.dumps(status)}"
            time.sleep(0.3)

    def calls(self) -> list[tuple[str, str]]:
        """Every stand-in call of every node (from their state directories), oldest first."""
        entries = []
        for log in sorted((self.directory / "system" / "nodes").glob("*/state/calls.log")):
            hostname = f"lab-{log.parent.parent.name}"
            for line in log.read_text().splitlines():
                call = json.loads(line)
                if call["cmd"] != "<boot>":
                    entries.append((call["t"], hostname, " ".join([call["cmd"], *call["argv"]])))
        return [(host, command) for _, host, command in sorted(entries)]

    def leftovers(self, pids: list[int]) -> list[str]:
        """What the lab left on the machine: namespaces, processes, files outside its directory."""
        left = [f"namespace {ns}" for ns in list_netns() if ns.startswith(f"{self.prefix}-")]
        left += [f"process {pid}" for pid in pids if pid_alive(pid)]
        left += [f"file {p}" for p in Path("/tmp").glob(f"mko-lab-{self.prefix}-*")]
        runtime = (self.directory / "system", self.directory / "nut", self.directory / "control.sock")
        left += [f"lab runtime {p}" for p in runtime if p.exists()]
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(self.directory).encode() in cmdline:
                argv = cmdline.replace(b"\0", b" ").decode(errors="replace")
                left.append(f"process {proc.name}: {argv}")
        return left

    # ------------------------------------------------------------------ the lab's own records

    def mko(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Any `mko` command against the lab's database (as docs/lab.md shows)."""
        result = subprocess.run(
            [*MKO, *args],
            env=self.env | {"MKO_DATABASE_URL": f"sqlite:///{self.directory / 'lab.db'}"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"mko {' '.join(args)}: {result.stderr}{result.stdout}"
        return result

    def records(self, what: str, since: int = 0) -> list[dict[str, Any]]:
        """Rows of the lab's database newer than id ``since``: operations (with steps), events, outages."""
        from sqlalchemy import select

        from mko.platform.db.models.operations import Operation
        from mko.platform.db.models.ups import UpsEvent
        from mko.platform.db.session import make_engine, make_session_factory
        from mko.ups import outages

        engine = make_engine(f"sqlite:///{self.directory / 'lab.db'}")
        try:
            with make_session_factory(engine)() as session:
                if what == "outages":
                    rows = [outages.outage_doc(session, o) for o in outages.list_outages(session, limit=1000)]
                    return sorted((r for r in rows if r["id"] > since), key=lambda r: int(r["id"]))
                if what == "events":
                    found = session.scalars(select(UpsEvent).where(UpsEvent.id > since).order_by(UpsEvent.id))
                    return [
                        {"id": e.id, "event": e.event.value, "message": e.message, "detail": e.detail}
                        for e in found
                    ]
                operations = session.scalars(
                    select(Operation).where(Operation.id > since).order_by(Operation.id)
                )
                return [
                    {
                        "id": op.id,
                        "kind": op.kind,
                        "status": op.status.value,
                        "actor": op.actor,
                        "summary": op.summary,
                        "result": op.result,
                        "steps": [(s.name, s.status.value, s.message) for s in op.steps],
                    }
                    for op in operations
                ]
        finally:
            engine.dispose()

    def newest(self, what: str) -> int:
        """The newest id of operations, events or outages (0 when none)."""
        rows = self.records(what)
        return int(rows[-1]["id"]) if rows else 0

    def instant_commands(self) -> list[str]:
        """The instant commands upsd carried out, from its own log."""
        log = (self.directory / "nut" / "upsd.log").read_text(errors="replace")
        return [line.split(" did ", 1)[1].split(" on ", 1)[0] for line in log.splitlines() if " did " in line]

    def cluster(self) -> Any:
        """The lab's simulated MicroK8s cluster (to make a command slow, as a real node can be)."""
        from mko.lab.microk8s import Microk8sCluster

        return Microk8sCluster(self.directory / "system")

    # ------------------------------------------------------------------ in-process, for tight races

    def control(self) -> Any:
        """The lab daemon's socket, spoken to from this process (what every `mko lab` command uses)."""
        from mko.lab.control import LabControl, LabPaths

        return LabControl(LabPaths.of(self.directory))

    def live(self) -> dict[str, Any]:
        """What `mko lab status --json` prints, read in-process (a CLI start costs seconds on a busy box)."""
        from mko.lab.control import lab_status
        from mko.platform.db.session import make_engine, make_session_factory

        engine = make_engine(f"sqlite:///{self.directory / 'lab.db'}")
        try:
            with make_session_factory(engine)() as session:
                return lab_status(self.control(), session)
        finally:
            engine.dispose()

    def until(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
    ) -> dict[str, Any]:
        """Poll the live status every 0.1 s until ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while not predicate(status := self.live()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {json.dumps(status)}"
            time.sleep(0.1)
        return status
