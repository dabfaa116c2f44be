"""Benchmark and transcript: one whole power cut of the virtual lab, as a person runs it from the CLI.

Runs the real commands (``mko lab up``, ``power-fail``, ``power-restore``, ``down``) with the lab's
default timings (nodes boot 2 s after their magic packet, the power-loss rule waits 5 s) and prints a
transcript: every command with its output, and, from ``mko lab status --json`` polled every 0.1 s,
the moment each thing happened (first node off, all off, UPS back, all on, all Ready and uncordoned).
Figures: time to bring the lab up, from the cut to the last node off (the 5 s delay included), from
power back to the cluster verified, and to tear it down. Needs root. Never fails on time.
Run with ``python bench/lab_cycle.py [NODES]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NODES = int(sys.argv[1]) if len(sys.argv) > 1 else 3
MKO = [sys.executable, "-m", "mko", "lab"]
START = time.monotonic()


def stamp() -> str:
    return f"[{time.monotonic() - START:7.2f} s]"


def run(directory: Path, *args: str) -> tuple[float, str]:
    began = time.monotonic()
    print(f"{stamp()} $ mko lab {' '.join(args)}")
    result = subprocess.run(
        [*MKO, *args, "--dir", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=os.environ | {"COLUMNS": "110"},  # the width of a terminal, for the transcript's tables
    )
    output = (result.stdout + result.stderr).rstrip()
    if result.returncode != 0:
        raise SystemExit(f"mko lab {' '.join(args)} failed ({result.returncode}): {output}")
    return time.monotonic() - began, output


def status(directory: Path) -> dict[str, Any]:
    """What `mko lab status --json` prints, read in-process so polling is cheap and timestamps are fine."""
    from mko.lab.control import LabControl, LabPaths, lab_settings, lab_status
    from mko.platform.db.session import make_engine, make_session_factory
    from mko.platform.settings import Settings

    paths = LabPaths.of(directory)
    engine = make_engine(lab_settings(paths, Settings()).database_url)
    try:
        with make_session_factory(engine)() as session:
            return lab_status(LabControl(paths), session)
    finally:
        engine.dispose()


def watch(directory: Path, milestones: dict[str, Any], timeout: float = 120) -> dict[str, float]:
    """Poll the lab until every milestone predicate held once; return when each first held."""
    began, seen = time.monotonic(), {}
    while len(seen) < len(milestones) and time.monotonic() - began < timeout:
        doc = status(directory)
        for name, holds in milestones.items():
            if name not in seen and holds(doc):
                seen[name] = time.monotonic() - began
                running = ", ".join(f"{op['kind']} #{op['id']}" for op in doc["running"]) or "nothing running"
                print(f"{stamp()}   {name} (+{seen[name]:.2f} s; {running})")
        time.sleep(0.1)
    return seen


def nodes(doc: dict[str, Any], **wanted: Any) -> list[dict[str, Any]]:
    return [n for n in doc["nodes"] if all(n[k] == v for k, v in wanted.items())]


def settled(doc: dict[str, Any], kind: str) -> bool:
    done = [
        op for op in doc["operations"] if op["kind"] == kind and op["status"] not in ("pending", "running")
    ]
    return bool(done) and not doc["running"]


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root")
    with tempfile.TemporaryDirectory(prefix="mko-bench-lab-") as tmp:
        directory = Path(tmp) / "lab"
        took_up, output = run(
            directory, "up", "--nodes", str(NODES), "--port", "18479", "--prefix", "mkobench"
        )
        print("\n".join(line for line in output.splitlines() if "password" not in line))
        try:
            took_fail, output = run(directory, "power-fail")
            print(output)
            down = watch(
                directory,
                {
                    "the power-loss rule started the shutdown": lambda d: any(
                        op["kind"] == "cluster_shutdown" for op in d["operations"]
                    ),
                    "first node off": lambda d: bool(nodes(d, power="off")),
                    "every node off, shutdown settled": lambda d: (
                        len(nodes(d, power="off")) == NODES and settled(d, "cluster_shutdown")
                    ),
                },
            )
            took_restore, output = run(directory, "power-restore")
            print(output)
            up = watch(
                directory,
                {
                    "first node booted by its magic packet": lambda d: any(
                        n["boots"] >= 2 for n in d["nodes"]
                    ),
                    "every node on": lambda d: len(nodes(d, power="on")) == NODES,
                    "every node Ready and uncordoned, recovery settled": lambda d: (
                        len(nodes(d, ready=True, cordoned=False)) == NODES and settled(d, "cluster_recover")
                    ),
                },
            )
            _, output = run(directory, "status")
            print(output)
        finally:
            took_down, output = run(directory, "down")
            print(output)
    print()
    print(f"lab up ({NODES} nodes, sshd each, upsd, mko serve --lab): {took_up:.1f} s")
    print(f"power-fail command until upsd serves OB: {took_fail:.2f} s (CLI start included)")
    last_off = down.get("every node off, shutdown settled", float("nan"))
    print(f"cut -> every node off (5 s rule delay included): {took_fail + last_off:.1f} s")
    verified = up.get("every node Ready and uncordoned, recovery settled", float("nan"))
    print(f"power back -> every node on, Ready, uncordoned (2 s boots): {took_restore + verified:.1f} s")
    print(f"lab down: {took_down:.1f} s")


if __name__ == "__main__":
    main()
