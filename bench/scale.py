"""Benchmark: what grows with the inventory, at 1,000 and at 10,000 nodes, and the ratio between them.

For each size a temporary SQLite database gets one cluster of that many nodes (loopback addresses;
their magic packets go to a UDP receiver on 127.255.255.255, the only address this benchmark sends
to) and 10 finished wakes of every node (written in bulk: set-up, not measured). Then, in this one
process:

* the web's ``GET /nodes`` (first page, signed in), ``GET /api/nodes?limit=100`` and
  ``GET /api/nodes/reachability`` for the 100 nodes of a page: median of ``--runs`` requests, through
  the real app in-process, beside a bare FastAPI route served the same way (the baseline);
* a REST cluster wake (``POST /api/clusters/1/wol/wake``, one packet per node): time from the request
  to the first packet (the receiver's kernel timestamp), median of 3, in-process and against a real
  ``mko serve`` (which freezes its start-up objects for the garbage collector, as the in-process app
  does not);
* ``mko node list`` (the first page of 1,000) as a fresh process, beside ``python -c pass`` run
  round robin with it (the interpreter's own start, the floor);
* ``mko wol wake-cluster 1`` as a fresh process: the time from the wake's last packet to the process's
  exit, for a burst (``--retries 1 --delay 0``: its steps are written once, closed) and for a wake of
  two rounds 1.5 s apart (its steps are written running, then closed);
* ``mko serve``'s resident memory after the nodes page and the node list were served.

It prints each figure, the 10,000/1,000 ratio (10 would be linear), and issue 23's targets beside
them. A benchmark reports; it does not fail on a missed target. Run with ``python bench/scale.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_start import LOOPBACK_BROADCAST, Receiver

SIZES = (1_000, 10_000)
WAKES = 10
TARGETS = {
    "web /nodes first page": "≤ 0.150 s at 10,000",
    "GET /api/nodes?limit=100": "≤ 0.030 s at 10,000",
    "REST cluster wake: first packet": "≤ 0.3 s at 10,000",
    "REST wake via mko serve: first packet": "≤ 0.3 s at 10,000",
    "mko node list (first 1,000)": "≤ 0.8 s at 10,000",
    "CLI wake-cluster: last packet to exit": "≤ 0.3 s at 10,000",
    "CLI wake, 2 rounds: last packet to exit": "≤ 0.3 s at 10,000",
    "mko serve RSS (MiB)": "≤ 120 MiB at 10,000",
}


def populate(database_url: str, size: int, port: int, wakes: int = WAKES) -> None:
    """One cluster of ``size`` nodes (packets to ``port`` on the loopback broadcast), an operator
    ``bench`` (password ``bench-password``) and ``wakes`` finished wakes of every node, in bulk."""
    from sqlalchemy import insert

    from mko.access.users import create_user
    from mko.platform.db.models.access import Role
    from mko.platform.db.models.base import utcnow
    from mko.platform.db.models.inventory import Cluster, Node
    from mko.platform.db.models.operations import Operation, OperationStatus, OperationStep
    from mko.platform.db.session import make_engine, make_session_factory
    from mko.platform.settings import get_settings

    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        create_user(session, get_settings(), "bench", "bench-password", Role.OPERATOR)
        cluster = Cluster(name="bench")
        session.add(cluster)
        session.flush()
        session.execute(
            insert(Node),
            [
                {
                    "hostname": f"node{n:05d}",
                    "ip_address": f"127.1.{n // 250}.{n % 250 + 1}",
                    "cluster_id": cluster.id,
                    "wol_enabled": True,
                    "wol_mac_address": f"02:00:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
                    "wol_broadcast_address": LOOPBACK_BROADCAST,
                    "wol_port": port,
                }
                for n in range(size)
            ],
        )
        now = utcnow()
        for _ in range(wakes):
            operation = Operation(
                kind="wol_wake_cluster",
                target_type="cluster",
                target_id=cluster.id,
                actor="bench",
                status=OperationStatus.SUCCEEDED,
                started_at=now,
                finished_at=now,
            )
            session.add(operation)
            session.flush()
            session.execute(
                insert(OperationStep),
                [
                    {
                        "operation_id": operation.id,
                        "seq": n + 1,
                        "node_id": n + 1,
                        "name": "wake",
                        "status": OperationStatus.SUCCEEDED,
                        "detail": {"state": "sent"},
                        "started_at": now,
                        "finished_at": now,
                    }
                    for n in range(size)
                ],
            )
        session.commit()
    engine.dispose()


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def _in_process(database_url: str, runs: int, receiver: Receiver) -> dict[str, float]:
    """Request timings through the real app, and the bare FastAPI baseline, in this process."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mko.app import create_app
    from mko.platform.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    bare = FastAPI()
    bare.get("/")(lambda: {"status": "ok"})
    figures: dict[str, float] = {}

    def timed(client: TestClient, url: str, **kwargs: Any) -> float:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(url, **kwargs)
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
        return _median(samples)

    with TestClient(bare) as client:
        timed(client, "/")
        figures["bare FastAPI route (baseline)"] = timed(client, "/")
    app = create_app(settings)
    with TestClient(app) as client:
        client.post("/login", data={"username": "bench", "password": "bench-password", "next": "/"})
        assert "showing 1–100 of" in client.get("/nodes").text, "not signed in: the figures would be wrong"
        timed(client, "/nodes")
        figures["web /nodes first page"] = timed(client, "/nodes")
        figures["GET /api/nodes?limit=100"] = timed(client, "/api/nodes", params={"limit": 100})
        ids = [("node_id", str(i)) for i in range(1, 101)]
        figures["GET /api/nodes/reachability (a page)"] = timed(client, "/api/nodes/reachability", params=ids)
        page = client.get("/nodes").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        headers = {"X-CSRF-Token": csrf.group(1) if csrf else ""}

        def wake() -> dict[str, Any]:
            answer = client.post("/api/clusters/1/wol/wake", json={"retries": 1, "delay": 0}, headers=headers)
            assert answer.status_code in (200, 202), answer.text
            return dict(answer.json())

        def operation(operation_id: int) -> dict[str, Any]:
            return dict(client.get(f"/api/operations/{operation_id}").json())

        first = _rest_first_packets(receiver, wake, operation)
        if first is not None:
            figures["REST cluster wake: first packet"] = first
    app.state.engine.dispose()
    return figures


def _rest_first_packets(
    receiver: Receiver,
    wake: Callable[[], dict[str, Any]],
    operation: Callable[[int], dict[str, Any]],
    runs: int = 3,
) -> float | None:
    """Median time from a REST cluster wake's request to its first packet; each wake is let finish
    before the next (a wake of a cluster whose wake still runs would join it)."""
    samples = []
    for _ in range(runs):
        receiver.reset()
        started = time.time_ns()
        answer = wake()
        deadline = time.monotonic() + 60
        while receiver.first_ns is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if receiver.first_ns is not None:
            samples.append((receiver.first_ns - started) / 1e9)
        while operation(answer["operation_id"])["status"] in ("pending", "running"):
            if time.monotonic() > deadline:
                raise SystemExit(f"operation {answer['operation_id']} still runs after a minute")
            time.sleep(0.1)
        receiver.settled()
    return _median(samples) if samples else None


def _subprocesses(workdir: Path, env: dict[str, str], receiver: Receiver, runs: int) -> dict[str, float]:
    mko = str(Path(sys.executable).with_name("mko"))
    figures: dict[str, float] = {}
    floor, samples = [], []
    for _ in range(max(3, runs // 3)):  # round robin: a neighbour's load falls on both alike
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        floor.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([mko, "node", "list"], cwd=workdir, env=env, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    figures["python -c pass (baseline)"] = _median(floor)
    figures["mko node list (first 1,000)"] = _median(samples)
    wakes = {
        "CLI wake-cluster: last packet to exit": ["--retries", "1", "--delay", "0"],
        "CLI wake, 2 rounds: last packet to exit": ["--retries", "2", "--delay", "1.5"],
    }
    for name, options in wakes.items():
        tails = []
        for _ in range(3):
            receiver.reset()
            subprocess.run(
                [mko, "wol", "wake-cluster", "1", *options],
                cwd=workdir,
                env=env,
                capture_output=True,
                check=False,
            )
            exited = time.time_ns()
            _count, _first, last = receiver.settled()
            if last is not None:
                tails.append((exited - last) / 1e9)
        if tails:
            figures[name] = _median(tails)
    return figures


def _serve(workdir: Path, env: dict[str, str], receiver: Receiver) -> dict[str, float]:
    """``mko serve``'s resident set in MiB after the nodes page and a page of the API were served, then
    its REST cluster wake's first packet."""
    mko = str(Path(sys.executable).with_name("mko"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [mko, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                opener.open(base + "/api/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        form = urllib.parse.urlencode({"username": "bench", "password": "bench-password", "next": "/"})
        opener.open(base + "/login", data=form.encode(), timeout=30).read()
        opener.open(base + "/nodes", timeout=30).read()
        opener.open(base + "/api/nodes?limit=100", timeout=30).read()
        status = Path(f"/proc/{server.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        figures = {"mko serve RSS (MiB)": int(match.group(1)) / 1024 if match else float("nan")}
        page = opener.open(base + "/nodes", timeout=30).read().decode()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        headers = {"X-CSRF-Token": csrf.group(1) if csrf else "", "Content-Type": "application/json"}

        def wake() -> dict[str, Any]:
            body = json.dumps({"retries": 1, "delay": 0}).encode()
            url = base + "/api/clusters/1/wol/wake"
            request = urllib.request.Request(url, body, headers, method="POST")  # noqa: S310 - loopback only
            return dict(json.loads(opener.open(request, timeout=60).read()))

        def operation(operation_id: int) -> dict[str, Any]:
            return dict(json.loads(opener.open(f"{base}/api/operations/{operation_id}", timeout=60).read()))

        first = _rest_first_packets(receiver, wake, operation)
        if first is not None:
            figures["REST wake via mko serve: first packet"] = first
        return figures
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="requests per in-process figure")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="inventory sizes, e.g. 1000,10000")
    parser.add_argument("--populate", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        populate(args.populate[0], int(args.populate[1]), int(args.populate[2]))
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    receiver = Receiver()
    mko = str(Path(sys.executable).with_name("mko"))
    load_before = os.getloadavg()[0]
    results: dict[int, dict[str, float]] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="mko-bench-scale-") as tmp:
            workdir = Path(tmp)
            env = {k: v for k, v in os.environ.items() if not k.startswith("MKO_")}
            env |= {
                "MKO_DATABASE_URL": f"sqlite:///{workdir / 'mko.db'}",
                "MKO_LOG_DIR": str(workdir / "logs"),
                "MKO_CONFIG": str(workdir / "absent.toml"),
                "MKO_REACHABILITY_INTERVAL": "0",
                "MKO_SCHEDULER_ENABLED": "false",
            }
            subprocess.run([mko, "db", "upgrade"], cwd=workdir, env=env, check=True, capture_output=True)
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--populate",
                    env["MKO_DATABASE_URL"],
                    str(size),
                    str(receiver.port),
                ],
                cwd=workdir,
                env=env,
                check=True,
            )
            saved = dict(os.environ)
            os.environ.update(env)
            try:
                figures = _in_process(env["MKO_DATABASE_URL"], args.runs, receiver)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            figures |= _subprocesses(workdir, env, receiver, args.runs)
            figures |= _serve(workdir, env, receiver)
            results[size] = figures
    load_after = os.getloadavg()[0]
    print(f"{WAKES} finished wakes of every node; load average {load_before:.2f} → {load_after:.2f}")
    names = list(results[sizes[0]])
    header = "".join(f"{size:>12,}" for size in sizes)
    print(f"{'figure (seconds unless named)':42}{header}  ratio  target")
    for name in names:
        row = "".join(f"{results[size].get(name, float('nan')):>12.4f}" for size in sizes)
        ratio = ""
        if len(sizes) > 1 and results[sizes[0]].get(name):
            ratio = f"{results[sizes[-1]].get(name, float('nan')) / results[sizes[0]][name]:6.2f}"
        print(f"{name:42}{row}  {ratio:>5}  {TARGETS.get(name, '')}")
    baseline = {size: results[size]["bare FastAPI route (baseline)"] for size in sizes}
    for size in sizes:
        page = results[size]["GET /api/nodes?limit=100"] / baseline[size]
        print(f"at {size:,}: GET /api/nodes?limit=100 costs {page:.1f}x the bare route in the same run")
        listed = results[size]["mko node list (first 1,000)"] / results[size]["python -c pass (baseline)"]
        print(f"at {size:,}: mko node list costs {listed:.1f}x python -c pass in the same run")


if __name__ == "__main__":
    main()
