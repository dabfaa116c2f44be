"""Wake agents with real packets: `mko serve` on subnet 1, `mko agent` on subnet 2, a router between.

The orchestrator's namespace has no interface on subnet 2, so the only way a site-"b" node can get a
magic packet is from the agent. Claim races run on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from mko.access.principal import Principal
from mko.access.tokens import create_token
from mko.agents.claims import claim_job
from mko.agents.registry import heartbeat
from mko.agents.schemas import AgentHeartbeat
from mko.inventory.clusters import update_cluster
from mko.inventory.nodes import create_node
from mko.inventory.schemas import ClusterUpdate, NodeCreate
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.netns import NodeSpec, enter_netns
from mko.lab.postgres import PostgresServer
from mko.lab.sites import join_labs
from mko.platform.db.models.access import Role
from mko.platform.db.models.agents import WakeJob, WakeJobStatus
from mko.platform.db.models.base import utcnow
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.db.upgrade import upgrade
from mko.platform.settings import Settings
from support.auth import admin_headers

ROOT = Path(__file__).resolve().parents[3]
PORT = 18091
SERVE_ARGS = ("--host", "0.0.0.0", "--port", str(PORT))  # listens inside the lab namespace only
REMOTE_MACS = ("02:14:00:00:00:11", "02:14:00:00:00:12")


class Api:
    """HTTP calls into the orchestrator, made from inside its namespace."""

    def __init__(self, netns: str, base: str, headers: dict[str, str]) -> None:
        self.netns, self.base, self.headers = netns, base, headers

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with enter_netns(self.netns), httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as c:
            return c.request(method, path, **kwargs)

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def two_sites(
    settings: Settings, session: Session, lab_factory: Any, tmp_path: Path
) -> Iterator[tuple[RunningLab, RunningLab, Api, dict[str, Any]]]:
    """Subnet 1 (orchestrator + one local node) and subnet 2 (agent + two site-b nodes), routed."""
    home = lab_factory(1)
    remote = lab_factory([NodeSpec(mac=mac) for mac in REMOTE_MACS], subnet="10.214.0.0/24")
    router = join_labs(home.lab, remote.lab)
    cluster, nodes = register_lab(session, remote, cluster_name="b")
    update_cluster(session, cluster.id, ClusterUpdate(site="b"))
    local = create_node(
        session,
        NodeCreate(
            hostname="b-home",
            ip_address=home.nodes[0].ip,
            cluster_id=cluster.id,
            ssh_user="root",
            ssh_port=2222,
            probe_port=2222,
            wol_enabled=True,
            wol_mac_address=home.nodes[0].mac,
            wol_prefix_len=home.lab.prefix_len,
            site="local",  # a node of the site-b cluster that sits on the orchestrator's own LAN
        ),
    )
    _, token = create_token(session, "agent-b", Role.AGENT)
    token_file = tmp_path / "agent.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    env = os.environ | {
        "MKO_DATABASE_URL": settings.database_url,
        "MKO_LOG_DIR": str(settings.log_dir),
        "MKO_AGENT_HEARTBEAT_INTERVAL": "0.3",
        "MKO_AGENT_OFFLINE_AFTER": "1.5",
    }
    server = _start(
        ["ip", "netns", "exec", home.lab.orch, sys.executable, "-m", "mko", "serve", *SERVE_ARGS],
        env,
        tmp_path / "serve.log",
    )
    base = f"http://{home.lab.orch_ip}:{PORT}"
    api = Api(home.lab.orch, base, admin_headers(settings.database_url))
    context: dict[str, Any] = {
        "cluster": cluster,
        "nodes": nodes,
        "local": local,
        "token_file": token_file,
        "env": env,
        "url": base,
        "processes": [server],
        "tmp": tmp_path,
    }

    def up() -> bool:
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        try:
            return api("GET", "/api/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        api.wait_until(up, 30, "mko serve")
        yield home, remote, api, context
    finally:
        for process in context["processes"]:
            _stop(process)
        router.destroy()


def _agent(remote: RunningLab, context: dict[str, Any]) -> subprocess.Popen[bytes]:
    command = ["ip", "netns", "exec", remote.lab.orch, sys.executable, "-m", "mko", "agent"]
    command += ["--site", "b", "--url", context["url"], "--token-file", str(context["token_file"])]
    command += ["--name", "pi-b"]
    process = _start(command, context["env"], context["tmp"] / "agent.log")
    context["processes"].append(process)
    return process


def _operation(api: Api, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    operation = api("GET", f"/api/operations/{response.json()['operation_id']}").json()
    assert isinstance(operation, dict)
    return operation


def test_agent_on_the_second_subnet_wakes_its_site_and_only_there(
    two_sites: tuple[RunningLab, RunningLab, Api, dict[str, Any]], session: Session
) -> None:
    home, remote, api, context = two_sites
    cluster_id = context["cluster"].id
    home_node = home.nodes[0]

    # No agent yet: the site's nodes fail at once with the reason; the local node is still woken.
    response = api("POST", f"/api/clusters/{cluster_id}/wol/wake", json={"retries": 2, "delay": 0.05})
    first = _operation(api, response)
    assert first["status"] == "partial", first
    steps = {s["node_id"]: s for s in first["steps"]}
    for node in context["nodes"]:
        assert steps[node.id]["message"] == "failed: no live agent for site b (site b)"
    assert steps[context["local"].id]["status"] == "succeeded"
    assert home_node.recorder.wait_for(2, timeout=5, mac=home_node.mac)
    assert all(not n.recorder.packets for n in remote.nodes)
    home.clear()

    agent = _agent(remote, context)
    api.wait_until(
        lambda: any(a["online"] for a in api("GET", "/api/agents").json()) or agent.poll() is not None,
        30,
        "the agent's first heartbeat",
    )
    assert agent.poll() is None, (context["tmp"] / "agent.log").read_text()
    [listed] = api("GET", "/api/agents").json()
    assert (listed["name"], listed["site"], listed["online"]) == ("pi-b", "b", True)

    started = time.monotonic()
    response = api(
        "POST", f"/api/clusters/{cluster_id}/wol/wake", json={"wait": True, "timeout": 20, "delay": 0.2}
    )
    operation = _operation(api, response)
    assert operation["status"] == "succeeded", operation
    steps = {s["node_id"]: s for s in operation["steps"]}
    for lab_node, node in zip(remote.nodes, context["nodes"], strict=True):
        step = steps[node.id]
        assert step["status"] == "succeeded" and step["detail"]["state"] == "up", step
        assert step["detail"]["agent"] == "pi-b" and step["message"].endswith("(site b, agent pi-b)")
        assert lab_node.power.is_on
        packets = lab_node.recorder.packets_for(lab_node.mac)
        assert packets, f"{lab_node.name} received no magic packet"
        # Sent on subnet 2 by the agent, to subnet 2's broadcast.
        assert {(p.ip_src, p.ip_dst) for p in packets} == {(remote.lab.orch_ip, remote.lab.broadcast)}
        assert lab_node.power.booted_at is not None and lab_node.power.booted_at > started
    assert steps[context["local"].id]["status"] == "succeeded" and home_node.power.is_on
    # Subnet 1 (the orchestrator's) saw none of the site's packets; subnet 2 none of the local node's.
    assert {p.target_mac for p in home_node.recorder.packets} == {home_node.mac}
    for lab_node in remote.nodes:
        assert home_node.mac not in {p.target_mac for p in lab_node.recorder.packets}
    [job] = [j for j in session.query(WakeJob).all() if j.operation_id == operation["id"]]
    assert job.status == WakeJobStatus.DONE and job.claimed_by == "pi-b"
    assert job.claimed_at is not None
    claim_latency = (job.claimed_at - job.created_at).total_seconds()
    assert claim_latency >= 0
    print(f"job claimed {claim_latency * 1000:.1f} ms after it was queued")

    # The CLI (another process, on the same database) takes the same path and sees the agent's report.
    command = ["ip", "netns", "exec", home.lab.orch, sys.executable, "cli.py", "wol", "wake-cluster"]
    cli = subprocess.run(
        [*command, str(cluster_id), "--retries", "1", "--json"],
        env=context["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    by_host = {n["hostname"]: n for n in json.loads(cli.stdout)["nodes"]}
    assert {by_host[n.hostname].get("agent") for n in context["nodes"]} == {"pi-b"}
    assert by_host["b-home"]["state"] == "sent" and "agent" not in by_host["b-home"]

    # The agent stops: its heartbeats end, and after agent_offline_after the site fails fast again.
    _stop(agent)
    api.wait_until(lambda: not api("GET", "/api/agents").json()[0]["online"], 10, "the agent to show offline")
    response = api("POST", f"/api/clusters/{cluster_id}/wol/wake", json={"retries": 1, "delay": 0})
    last = _operation(api, response)
    assert "no live agent for site b" in last["summary"]


# ---------------------------------------------------------------- claim races, SQLite and PostgreSQL


def _race(url: str, settings: Settings, jobs: int = 60, claimers: int = 2) -> list[list[int]]:
    """Queue ``jobs`` jobs for site b and let ``claimers`` agents of site b claim them all at once."""
    engine = make_engine(url)
    upgrade(engine)
    factory = make_session_factory(engine)
    principals = []
    with factory() as session:
        operation = Operation(
            kind="wol_wake_cluster",
            target_type="cluster",
            target_id=None,
            actor="test",
            status=OperationStatus.RUNNING,
            parameters={},
            result={},
            started_at=utcnow(),
        )
        session.add(operation)
        session.flush()
        expires = utcnow() + timedelta(minutes=5)
        for _ in range(jobs):
            session.add(
                WakeJob(
                    operation_id=operation.id,
                    site="b",
                    status=WakeJobStatus.QUEUED,
                    node_ids=[],
                    nodes=[],
                    schedule={},
                    expires_at=expires,
                )
            )
        session.commit()
        for index in range(claimers):
            token, _ = create_token(session, f"agent-{index}", Role.AGENT)
            principal = Principal(name=token.name, role=Role.AGENT, kind="token")
            heartbeat(session, principal, AgentHeartbeat(name=f"pi-{index}", site="b"))
            principals.append(principal)
    claimed: list[list[int]] = [[] for _ in range(claimers)]
    barrier = threading.Barrier(claimers)
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        try:
            barrier.wait()
            while True:
                with factory() as session:
                    job = claim_job(session, principals[index], f"pi-{index}")
                if job is None:
                    return
                claimed[index].append(job["job_id"])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with factory() as session:
        statuses = {j.status for j in session.query(WakeJob).all()}
        owners = {j.id: j.claimed_by for j in session.query(WakeJob).all()}
    engine.dispose()
    assert not errors, errors
    assert statuses == {WakeJobStatus.CLAIMED}
    for index, ids in enumerate(claimed):
        assert all(owners[i] == f"pi-{index}" for i in ids)
    return claimed


def _assert_each_once(claimed: list[list[int]], jobs: int = 60) -> None:
    everything = [job for ids in claimed for job in ids]
    assert sorted(everything) == sorted(set(everything))  # no job handed out twice
    assert len(everything) == jobs  # and none lost


def test_two_agents_claim_each_job_once_on_sqlite(settings: Settings, tmp_path: Path) -> None:
    _assert_each_once(_race(f"sqlite:///{tmp_path / 'race.db'}", settings))


def test_two_agents_claim_each_job_once_on_postgresql(settings: Settings, postgres: PostgresServer) -> None:
    claimed = _race(postgres.create_database("agent_race"), settings)
    _assert_each_once(claimed)
