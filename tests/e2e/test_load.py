"""A burst of 300 concurrent writes and wakes against a real `mko serve`, in a namespace of its own.

The server is the real process (uvicorn on real sockets) inside a network namespace with nothing but
loopback, so the wakes' magic packets and the background probes reach no real LAN. The burst mixes node
creates and updates, power-rule creates and wakes of nodes and clusters; while it runs, a second client
asks ``/api/health`` every few milliseconds.

What must hold (issue 17): every request gets an answer and none is a 5xx; ``/api/health`` answers
within 1 s at the 99th percentile during the burst; every acknowledged write is in the database, and
nothing that was not acknowledged is (no write lands after its request gave up).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from mko.lab.netns import enter_netns
from mko.platform.settings import Settings
from support.serve import ServeProcess

# It measures /api/health's latency: `make test` runs it alone, after the parallel tests (Makefile).
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

PROBE = Path(__file__).with_name("healthprobe.py")

NODE_CREATES = 100
NODE_UPDATES = 60
RULE_CREATES = 60
NODE_WAKES = 70
CLUSTER_WAKES = 10
BURST = NODE_CREATES + NODE_UPDATES + RULE_CREATES + NODE_WAKES + CLUSTER_WAKES
CLIENT_TIMEOUT = 90.0  # generous: an answer must come; how fast is what /api/health measures
HEALTH_P99_LIMIT = 1.0  # seconds: the acceptance bound


@dataclass
class Answer:
    """One request of the burst and what came back (``status`` None: no answer at all)."""

    kind: str
    key: str
    status: int | None = None
    body: Any = None
    error: str = ""


class HealthProber:
    """tests/e2e/healthprobe.py in the server's namespace: a process of its own, as a real probe is."""

    def __init__(self, netns: str, url: str) -> None:
        self.command = ["ip", "netns", "exec", netns, sys.executable, str(PROBE), url]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start probing."""
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def stop(self, since: float, until: float) -> tuple[list[float], list[str]]:
        """Stop; the seconds of each probe started between ``since`` and ``until`` (``time.time()``),
        and the answers that were not 200."""
        assert self.process is not None
        output, _ = self.process.communicate("", timeout=CLIENT_TIMEOUT)
        probes = [
            (float(at), float(took), status) for at, took, status in map(str.split, output.splitlines())
        ]
        during = [took for at, took, _ in probes if since <= at <= until]
        return during, [f"{took} s: {status}" for _, took, status in probes if status != "200"]


@dataclass
class Burst:
    """Everything the burst saw."""

    answers: list[Answer] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    health_failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """The figures, as the test prints them."""
        statuses = Counter(a.status for a in self.answers)
        health = self.health or [math.nan]
        return (
            f"\nburst: {len(self.answers)} requests in {self.seconds:.1f} s, statuses {dict(statuses)};"
            f" /api/health: {len(self.health)} probes, p50 {percentile(health, 0.5) * 1000:.0f} ms,"
            f" p99 {percentile(health, 0.99) * 1000:.0f} ms, max {max(health) * 1000:.0f} ms,"
            f" {len(self.health_failures)} failed"
        )


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def _setup(client: httpx.AsyncClient) -> dict[str, Any]:
    """A cluster of wakeable loopback nodes, a UPS and a second cluster for the rules."""

    async def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await client.post(url, json=body)
        assert response.status_code == 201, f"{url}: {response.status_code} {response.text}"
        data: dict[str, Any] = response.json()
        return data

    cluster = await post("/api/clusters", {"name": "load"})
    ups = await post("/api/ups", {"name": "load-ups", "ups_name": "ups", "host": "127.0.0.1", "port": 3493})
    nodes = []
    for index in range(NODE_UPDATES + NODE_WAKES):
        nodes.append(
            await post(
                "/api/nodes",
                {
                    "hostname": f"base-{index:03d}",
                    "ip_address": f"127.0.1.{index + 1}",
                    "cluster_id": cluster["id"],
                    "wol_enabled": True,
                    "wol_mac_address": f"02:00:00:00:{index // 256:02x}:{index % 256:02x}",
                    "wol_broadcast_address": "127.255.255.255",
                },
            )
        )
    wake_clusters = []
    for index in range(CLUSTER_WAKES):
        small = await post("/api/clusters", {"name": f"wake-{index}"})
        await post(
            "/api/nodes",
            {
                "hostname": f"cw-{index:03d}",
                "ip_address": f"127.0.2.{index + 1}",
                "cluster_id": small["id"],
                "wol_enabled": True,
                "wol_mac_address": f"02:00:00:01:00:{index:02x}",
                "wol_broadcast_address": "127.255.255.255",
            },
        )
        wake_clusters.append(small["id"])
    return {"cluster": cluster["id"], "ups": ups["id"], "nodes": nodes, "wake_clusters": wake_clusters}


def _requests(fixture: dict[str, Any]) -> list[tuple[Answer, str, str, dict[str, Any] | None]]:
    """The burst's requests, interleaved so every kind is in flight at once."""
    nodes = fixture["nodes"]
    creates = [
        (
            Answer("node_create", f"load-{i:03d}"),
            "POST",
            "/api/nodes",
            {"hostname": f"load-{i:03d}", "ip_address": f"127.0.3.{i + 1}", "cluster_id": fixture["cluster"]},
        )
        for i in range(NODE_CREATES)
    ]
    updates = [
        (
            Answer("node_update", str(node["id"])),
            "PATCH",
            f"/api/nodes/{node['id']}",
            {"description": f"updated in the burst {i}"},
        )
        for i, node in enumerate(nodes[:NODE_UPDATES])
    ]
    rules = [
        (
            Answer("rule_create", f"load-rule-{i:03d}"),
            "POST",
            "/api/ups/rules",
            {
                "name": f"load-rule-{i:03d}",
                "ups_id": fixture["ups"],
                "cluster_id": fixture["cluster"],
                "power_event": "power_loss",
                "cluster_action": "graceful_shutdown",
                "action_delay": 60 + i,
            },
        )
        for i in range(RULE_CREATES)
    ]
    wakes = [
        (Answer("node_wake", str(node["id"])), "POST", f"/api/nodes/{node['id']}/wol/wake", None)
        for node in nodes[NODE_UPDATES:]
    ]
    wakes += [
        (Answer("cluster_wake", str(cid)), "POST", f"/api/clusters/{cid}/wol/wake", None)
        for cid in fixture["wake_clusters"]
    ]
    groups = [creates, updates, rules, wakes]
    mixed = []
    while any(groups):
        for group in groups:
            if group:
                mixed.append(group.pop(0))
    return mixed


async def _burst(base: str, headers: dict[str, str], prober: HealthProber) -> tuple[dict[str, Any], Burst]:
    limits = httpx.Limits(max_connections=BURST + 10, max_keepalive_connections=BURST + 10)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=CLIENT_TIMEOUT, limits=limits
    ) as client:
        fixture = await _setup(client)
        requests = _requests(fixture)
        burst = Burst()
        prober.start()
        await asyncio.sleep(0.5)

        async def send(answer: Answer, method: str, url: str, body: dict[str, Any] | None) -> None:
            try:
                response = await client.request(method, url, json=body)
            except httpx.HTTPError as exc:
                answer.error = f"{type(exc).__name__}: {exc}"
                return
            answer.status = response.status_code
            try:
                answer.body = response.json()
            except ValueError:
                answer.body = response.text

        since, started = time.time(), time.perf_counter()
        await asyncio.gather(*(send(*request) for request in requests))
        burst.seconds = time.perf_counter() - started
        await asyncio.sleep(0.5)
        burst.health, burst.health_failures = prober.stop(since, since + burst.seconds)
        burst.answers = [request[0] for request in requests]
        print(burst.summary())
        # Wakes that answered 202 go on in the background: let them end before the database is read.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = (await client.get("/api/operations", params={"limit": 1000})).json()
            if not any(op["status"] in ("running", "pending") for op in running):
                break
            await asyncio.sleep(0.5)
        return fixture, burst


def _stored(database: Path) -> dict[str, Any]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return {
            "nodes": dict(
                db.execute("SELECT hostname, id FROM nodes WHERE hostname LIKE 'load-%'").fetchall()
            ),
            "descriptions": dict(db.execute("SELECT id, description FROM nodes").fetchall()),
            "rules": dict(
                db.execute("SELECT name, id FROM power_rules WHERE name LIKE 'load-rule-%'").fetchall()
            ),
            "operations": {row[0] for row in db.execute("SELECT id FROM operations")},
        }


def test_a_burst_of_writes_and_wakes_is_answered_stored_and_health_stays_fast(
    settings: Settings, admin_token: str, isolated_netns: str, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    env = {"MKO_REACHABILITY_INTERVAL": "2", "MKO_WOL_DEFAULT_DELAY": "0.2"}
    with ServeProcess.start(isolated_netns, settings, tmp_path / "serve.log", env) as server:
        with enter_netns(isolated_netns):
            fixture, burst = asyncio.run(
                _burst(server.url, headers, HealthProber(isolated_netns, server.url))
            )
        server.check_alive()

    answers = burst.answers
    p99 = percentile(burst.health, 0.99)
    unanswered = [f"{a.kind} {a.key}: {a.error}" for a in answers if a.status is None]
    assert not unanswered, f"{len(unanswered)} request(s) got no answer: {unanswered[:5]}"
    server_errors = [f"{a.kind} {a.key}: {a.status} {a.body}" for a in answers if a.status >= 500]
    assert not server_errors, f"{len(server_errors)} 5xx: {server_errors[:5]}"
    expected = {"node_create": {201}, "node_update": {200}, "rule_create": {201}}
    wrong = [
        f"{a.kind} {a.key}: {a.status} {a.body}"
        for a in answers
        if a.status not in expected.get(a.kind, {200, 202})
    ]
    assert not wrong, wrong[:5]
    assert not burst.health_failures, burst.health_failures[:5]
    assert p99 < HEALTH_P99_LIMIT, f"/api/health p99 {p99:.3f} s during the burst"

    stored = _stored(Path(str(make_url(settings.database_url).database)))
    created = {a.key: a.body["id"] for a in answers if a.kind == "node_create"}
    assert stored["nodes"] == created  # every acknowledged create, and nothing else
    for answer in (a for a in answers if a.kind == "node_update"):
        assert stored["descriptions"][int(answer.key)] == answer.body["description"]
    rules = {a.key: a.body["id"] for a in answers if a.kind == "rule_create"}
    assert stored["rules"] == rules
    woken = {a.body["operation_id"] for a in answers if a.kind.endswith("_wake")}
    assert woken <= stored["operations"]
    assert len(fixture["nodes"]) == NODE_UPDATES + NODE_WAKES
