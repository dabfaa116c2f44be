"""Benchmark: the API's throughput and p99 under wrk, against a bare FastAPI route served the same way.

Both servers run in this one process's run, one after the other on loopback, each pinned to the same
CPU when ``taskset`` exists: ``mko serve`` on a temporary SQLite database of 1,000 nodes (loopback
addresses; the reachability refresher off, so nothing is probed), and a two-line FastAPI app on
uvicorn with the same loop and HTTP settings (the baseline). ``wrk`` drives each route for
``--seconds`` (5 by default) at 16 and 64 connections:

* ``GET /`` of the bare app (the baseline);
* ``GET /api/health``, ``GET /api/nodes/500/wol/status`` (a viewer token) and
  ``GET /api/nodes?limit=100``.

It prints requests per second, p99 latency, and each route's share of the bare app's requests per
second at the same connection count (issue 23's targets: health >= 0.6, wol/status >= 0.4, p99 <= 20 ms).
Then 256 connections hit ``/api/health`` for the same bounded time: it reports timeouts and errors,
and whether the server still answers right after (no wedge). A benchmark reports; it does not fail
on a missed target. Needs ``wrk`` (Debian package wrk). Run with ``python bench/api_load.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import populate

NODES = 1_000
CONNECTIONS = (16, 64)
TARGETS = {"/api/health": 0.6, "/api/nodes/500/wol/status": 0.4}
P99_TARGET_MS = 20.0

BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("/")
def root() -> dict[str, str]:
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(argv: list[str]) -> list[str]:
    """Run on CPU 0 when taskset exists, so both servers get the same single core."""
    return ["taskset", "-c", "0", *argv] if shutil.which("taskset") else argv


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def _server(argv: list[str], env: dict[str, str], ready_url: str, cwd: Path) -> Iterator[int]:
    process = subprocess.Popen(
        _pinned(argv), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_ready(ready_url)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the server process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(
    url: str, connections: int, seconds: int, token: str | None = None, pid: int | None = None
) -> dict[str, float]:
    """One bounded wrk run: requests/s, p99 in ms, timeouts, errors, and the server's CPU ms a request."""
    cpu_before = _cpu_seconds(pid) if pid else 0.0
    argv = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s", "--latency"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", out, re.MULTILINE)
    timeouts = re.search(r"timeout (\d+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    count = re.search(r"(\d+) requests in", out)
    requests = int(count.group(1)) if count else 0
    cpu_ms = (_cpu_seconds(pid) - cpu_before) * 1000 / requests if pid and requests else float("nan")
    return {
        "cpu_ms": cpu_ms,
        "rps": float(rate.group(1)) if rate else 0.0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "timeouts": float(timeouts.group(1)) if timeouts else 0.0,
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--populate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        populate(args.populate, NODES, port=9, wakes=0)  # nothing is woken: the port is never used
        return
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk): skipped")
        return
    mko = str(Path(sys.executable).with_name("mko"))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mko-bench-api-") as tmp:
        workdir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MKO_")}
        env |= {
            "MKO_DATABASE_URL": f"sqlite:///{workdir / 'mko.db'}",
            "MKO_LOG_DIR": str(workdir / "logs"),
            "MKO_REACHABILITY_INTERVAL": "0",
            "MKO_SCHEDULER_ENABLED": "false",
        }
        subprocess.run([mko, "db", "upgrade"], cwd=workdir, env=env, check=True, capture_output=True)
        subprocess.run(
            [sys.executable, __file__, "--populate", env["MKO_DATABASE_URL"]],
            env=env,
            cwd=workdir,
            check=True,
        )
        created = subprocess.run(
            [mko, "token", "create", "bench", "--role", "viewer"],
            cwd=workdir,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        token = created.stdout.strip().splitlines()[-1]
        figures: dict[tuple[str, int], dict[str, float]] = {}
        bare_port = _free_port()
        bare = f"http://127.0.0.1:{bare_port}"
        with _server([sys.executable, "-c", BARE_APP, str(bare_port)], env, bare + "/", workdir) as pid:
            for connections in CONNECTIONS:
                figures[("bare FastAPI /", connections)] = _wrk(
                    bare + "/", connections, args.seconds, pid=pid
                )
            bare_wedge = _wrk(bare + "/", 256, args.seconds)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        serve = [mko, "serve", "--host", "127.0.0.1", "--port", str(port)]
        with _server(serve, env, base + "/api/health", workdir) as pid:
            for route in ("/api/health", "/api/nodes/500/wol/status", "/api/nodes?limit=100"):
                for connections in CONNECTIONS:
                    figures[(route, connections)] = _wrk(base + route, connections, args.seconds, token, pid)
            wedge = _wrk(base + "/api/health", 256, args.seconds)
            started = time.monotonic()
            _wait_ready(base + "/api/health", timeout=30)
            after = time.monotonic() - started
    load_after = os.getloadavg()[0]
    print(
        f"wrk, {args.seconds} s a run; servers pinned to CPU 0;"
        f" load average {load_before:.2f} → {load_after:.2f}"
    )
    # "share" is req/s against the bare app's; "cpu share" is the bare app's CPU time a request over this
    # route's: what the share would be on a core of its own (the machine's other load does not move it).
    columns = f"{'req/s':>9} {'p99 ms':>8} {'share':>6} {'cpu ms':>7} {'cpu share':>9}"
    print(f"{'route':34} {'conns':>5} {columns}  target")
    for (route, connections), figure in figures.items():
        bare_figure = figures[("bare FastAPI /", connections)]
        share = figure["rps"] / (bare_figure["rps"] or 1.0)
        cpu_share = bare_figure["cpu_ms"] / figure["cpu_ms"] if figure["cpu_ms"] else float("nan")
        target = TARGETS.get(route)
        note = f"share >= {target}, p99 <= {P99_TARGET_MS:.0f} ms" if target else ""
        print(
            f"{route:34} {connections:>5} {figure['rps']:>9.0f} {figure['p99_ms']:>8.1f}"
            f" {share:>6.2f} {figure['cpu_ms']:>7.3f} {cpu_share:>9.2f}  {note}"
        )
    for name, figure in (("bare FastAPI /", bare_wedge), ("/api/health", wedge)):
        print(
            f"256 connections, {name}: {figure['rps']:.0f} req/s, p99 {figure['p99_ms']:.1f} ms,"
            f" {figure['timeouts']:.0f} timeouts, {figure['errors']:.0f} non-2xx"
        )
    print(f"mko answered /api/health {after:.2f} s after the 256-connection run (no wedge when small)")


if __name__ == "__main__":
    main()
