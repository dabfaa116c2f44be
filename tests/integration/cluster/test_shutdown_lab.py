"""Graceful cluster shutdown and verified recovery against real sshd in lab namespaces (issue 5).

Every node runs OpenSSH's sshd in its own namespaces with the lab's ``microk8s``, ``snap``,
``systemctl`` and ``shutdown`` stand-ins (mko.lab.microk8s). They share one simulated cluster: a drain
cordons, ``microk8s stop`` disables, ``systemctl poweroff`` kills the node's sshd and makes it NotReady,
a power-on boots it with MicroK8s started only if enabled. Workers are joined ``--worker``, so
``microk8s stop`` there only prints MicroK8s's notice, as the real wrapper does. The orchestrator side
runs in the lab's orch namespace, exactly as on the LAN; calls are read back from every node's
calls.log and merged by time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import asyncssh
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.app import create_app
from mko.inventory.nodes import get_node
from mko.lab.harness import RunningLab
from mko.lab.inventory import register_lab
from mko.lab.microk8s import configure_microk8s
from mko.lab.netns import enter_netns
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.schedules import ScheduleAction
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.schedules.scheduler import Scheduler
from mko.schedules.schemas import ScheduleCreate
from mko.schedules.service import create_schedule
from support.cluster import cluster_up, one_operation, orch_cli, power_up, stand_in_calls
from support.ups import wait_until


def _subject(call: tuple[str, str]) -> str:
    """The node a call is about: a drain or uncordon names it, anything else runs on it."""
    host, command = call
    words = command.split()
    if words[:3] == ["microk8s", "kubectl", "get"]:
        return "lookup"
    if words[:3] in (["microk8s", "kubectl", "drain"], ["microk8s", "kubectl", "uncordon"]):
        return words[3]
    return host


@contextmanager
def _api(settings: Settings, running: RunningLab, token: str) -> Iterator[TestClient]:
    """The real app whose event loop (and so every SSH socket) lives in the orch namespace."""
    with enter_netns(running.lab.orch):
        application = create_app(settings)
        client = TestClient(application, headers={"Authorization": f"Bearer {token}"})
        client.__enter__()
    try:
        yield client
    finally:
        client.__exit__(None, None, None)
        application.state.engine.dispose()


def test_cli_shuts_down_in_order_then_recovers_every_node(
    fast: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    # n1-n3 control planes (n1 answers first: the drain host), n4-n5 workers; a PodDisruptionBudget
    # protects n5's pod, so its drain is refused until the grace (1 s here) runs out.
    running, cluster = cluster_up(
        fast, session, lab_factory, 5, control_planes=3, fail_drain=["lab-n5"], retry_delay=0.2
    )
    grace = orch_cli(cli, running, "cluster", "settings", "1", "--drain-grace", "1", "--json")
    assert grace.exit_code == 0, grace.stderr

    dry = orch_cli(cli, running, "cluster", "shutdown", "1", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "graceful shutdown of cluster 1 (lab); drain host: lab-n1",
        "note: a drain a PodDisruptionBudget still blocks after 1 s deletes the pods it protects"
        " (kubectl drain --disable-eviction)",
        "1. first, through the drain host lab-n1:",
        "   datastore backup  microk8s dbctl backup on lab-n1, kept on mko's host (last 5; a failed backup"
        " is reported, the shutdown goes on)",
        "   storage quiesce   scale to zero the Deployments and StatefulSets mounting PersistentVolumes"
        " (replicas stored for the recovery)",
        "   longhorn          wait up to 300 s for Longhorn volumes to detach (when Longhorn is installed)",
        "2. workers, in parallel:",
        "   kubectl drain  lab-n4 (run on lab-n1)",
        "   microk8s stop  lab-n4 (over SSH)",
        "   power off      lab-n4 (systemctl poweroff over SSH)",
        "   kubectl drain  lab-n5 (run on lab-n1)",
        "   microk8s stop  lab-n5 (over SSH)",
        "   power off      lab-n5 (systemctl poweroff over SSH)",
        "3. then control plane, alone:",
        "   kubectl drain  lab-n2 (run on lab-n1)",
        "   microk8s stop  lab-n2 (over SSH)",
        "   power off      lab-n2 (systemctl poweroff over SSH)",
        "4. then control plane, alone:",
        "   kubectl drain  lab-n3 (run on lab-n1)",
        "   microk8s stop  lab-n3 (over SSH)",
        "   power off      lab-n3 (systemctl poweroff over SSH)",
        "5. then the drain host, last of all:",
        "   microk8s stop  lab-n1 (over SSH)",
        "   power off      lab-n1 (systemctl poweroff over SSH)",
        "dry run: nothing was done",
    ]
    assert stand_in_calls(running) == []  # nothing ran anywhere
    assert all(node.power.is_on for node in running.nodes)
    assert session.scalars(select(Operation)).all() == []

    result = orch_cli(cli, running, "cluster", "shutdown", "1", "--yes", "--json")
    # Every node off; lab-n5's drain was refused by the budget, then its pod deleted past it.
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "succeeded" and body["failures"] == []
    assert sorted(body["powered_off"]) == [f"lab-n{i}" for i in range(1, 6)]
    [pod] = one_operation(session, "cluster_shutdown").result["notes"][0].split()[1:2]
    assert pod.startswith("default/web-6d8f7c9b5d-")
    assert body["notes"] == [f"lab-n5: {pod} deleted past default/web-pdb"]
    assert body["backup"]["node"] == "lab-n1" and body["backup"]["keys"] > 0

    calls = stand_in_calls(running)
    drain = "--ignore-daemonsets --delete-emptydir-data --timeout=1s"
    # First, on the drain host: the datastore backup, then the quiesce (nothing mounts a volume here).
    remote = calls[0][1].split(" -o ")[1]  # a fresh directory mktemp made on the node
    assert remote.startswith("/tmp/mko-dqlite.") and remote.endswith(
        body["backup"]["name"].removesuffix(".tar.gz")
    )
    assert calls[:4] == [
        ("lab-n1", f"microk8s dbctl backup -o {remote}"),
        ("lab-n1", "microk8s kubectl get pvc -A -o json"),
        ("lab-n1", "microk8s kubectl get deploy,sts -A -o json"),
        ("lab-n1", "microk8s kubectl get crd volumes.longhorn.io"),
    ]
    lookups = [c for c in calls[4:] if _subject(c) == "lookup"]
    assert lookups == [
        ("lab-n1", f"microk8s kubectl get pod -n default {pod.split('/')[1]} -o json"),
        ("lab-n1", "microk8s kubectl get pdb -A -o json"),
    ]
    worker_calls = [c for c in calls if _subject(c) in ("lab-n4", "lab-n5")]
    control_calls = [c for c in calls[4:] if _subject(c) not in ("lab-n4", "lab-n5", "lookup")]
    assert [c for c in worker_calls if _subject(c) == "lab-n4"] == [
        ("lab-n1", f"microk8s kubectl drain lab-n4 {drain}"),
        ("lab-n4", "microk8s stop"),  # joined --worker: only a notice, so mko falls back to snap
        ("lab-n4", "snap stop microk8s --disable"),
        ("lab-n4", "systemctl poweroff"),
    ]
    assert [c for c in worker_calls if _subject(c) == "lab-n5"] == [
        ("lab-n1", f"microk8s kubectl drain lab-n5 {drain}"),
        (
            "lab-n1",
            "microk8s kubectl drain lab-n5 --ignore-daemonsets --delete-emptydir-data --disable-eviction"
            " --timeout=120s",
        ),
        ("lab-n5", "microk8s stop"),
        ("lab-n5", "snap stop microk8s --disable"),
        ("lab-n5", "systemctl poweroff"),
    ]
    # Workers drained and stopped before any control plane; control planes one at a time; drain host last.
    assert calls.index(worker_calls[-1]) < calls.index(control_calls[0])
    assert control_calls == [
        ("lab-n1", f"microk8s kubectl drain lab-n2 {drain}"),
        ("lab-n2", "microk8s stop"),
        ("lab-n2", "systemctl poweroff"),
        ("lab-n1", f"microk8s kubectl drain lab-n3 {drain}"),
        ("lab-n3", "microk8s stop"),
        ("lab-n3", "systemctl poweroff"),
        ("lab-n1", "microk8s stop"),
        ("lab-n1", "systemctl poweroff"),
    ]
    wait_until(lambda: all(node.power.state == "off" for node in running.nodes), 5, what="every node off")
    state = cluster.nodes()
    assert {h: (n["enabled"], n["cordoned"], n["ready"]) for h, n in state.items()} == {
        "lab-n1": (False, False, False),
        **{f"lab-n{i}": (False, True, False) for i in range(2, 6)},
    }
    operation = one_operation(session, "cluster_shutdown")
    steps = {step.name: step for step in operation.steps}
    assert steps["host keys"].message == "5 verified"
    blocked = steps["drain lab-n5"]
    assert blocked.status == OperationStatus.FAILED
    assert blocked.message == (
        "eviction refused for 1 s by a PodDisruptionBudget: default/web-pdb (minAvailable=1, healthy 1/1,"
        f" allowed 0) protects {pod}"
    )
    assert blocked.detail["blocked_pods"] == [pod]
    assert "global timeout reached: 1s" in blocked.detail["stderr"]
    fallback = steps["fallback lab-n5"]
    assert fallback.status == OperationStatus.SUCCEEDED
    assert fallback.message == (
        f"whole-cluster power-off: deleted {pod} without eviction (kubectl drain --disable-eviction),"
        " bypassing default/web-pdb; node/lab-n5 drained"
    )
    assert fallback.detail["stdout"].splitlines() == [
        "node/lab-n5 already cordoned",
        f"pod/{pod.split('/')[1]} deleted",
        "node/lab-n5 drained",
    ]
    assert steps["backup lab-n1"].message.startswith(body["backup"]["name"] + ": ")
    assert (
        steps["quiesce"].message == "no Deployment or StatefulSet mounts a PersistentVolume: nothing to scale"
    )
    assert steps["drain lab-n4"].detail["stdout"].splitlines()[-1] == "node/lab-n4 drained"
    stop = steps["stop lab-n4"].detail
    assert (stop["command"], stop["instead_of"], stop["exit_status"]) == (
        "snap stop microk8s --disable",
        "microk8s stop",
        0,
    )
    assert stop["notice"] == "Use 'snap stop microk8s' to stop services on this node."
    poweroff = steps["poweroff lab-n1"]
    assert poweroff.message.startswith(
        "powered off: SSH answered, accepted it (`systemctl poweroff`), then stopped answering after "
    )
    assert (poweroff.detail["confirmed"], poweroff.detail["confirmed_by"]) == (True, "SSH stopped answering")
    node_steps = [step for step in operation.steps if step.node_id is not None]
    assert all(step.finished_at is not None and "duration" in step.detail for step in node_steps)
    session.expire_all()
    assert [n.cordoned_by_mko for n in session.scalars(select(Node).order_by(Node.id))] == [
        False,
        True,
        True,
        True,
        True,  # cordoned by the drain even though its eviction timed out
    ]

    # Power is back and the operator pressed the buttons: MicroK8s stays down (stop disabled it).
    running.power_on_all()
    assert not any(n["running"] for n in cluster.nodes().values())
    before = len(stand_in_calls(running))
    recovered = orch_cli(cli, running, "cluster", "recover", "1", "--timeout", "30", "--json")
    assert recovered.exit_code == 0, recovered.stdout + recovered.stderr
    report = json.loads(recovered.stdout)
    assert report["status"] == "succeeded"
    assert report["summary"] == "5/5 started, 5/5 Ready, 4 uncordoned"
    assert report["uncordoned"] == ["lab-n2", "lab-n3", "lab-n4", "lab-n5"]
    assert all(n["started"] and n["ready"] and n["ssh_after"] is not None for n in report["nodes"].values())
    assert {
        h: (n["enabled"], n["running"], n["ready"], n["cordoned"]) for h, n in cluster.nodes().items()
    } == {f"lab-n{i}": (True, True, True, False) for i in range(1, 6)}
    after = stand_in_calls(running)[before:]
    starts = [c for c in after if c[1] in ("microk8s start", "snap start microk8s --enable")]
    assert sorted(starts) == sorted(
        [(f"lab-n{i}", "microk8s start") for i in range(1, 6)]
        + [("lab-n4", "snap start microk8s --enable"), ("lab-n5", "snap start microk8s --enable")]
    )
    uncordons = [c for c in after if "uncordon" in c[1]]
    # Through the control plane whose API answered first, only the nodes mko cordoned, in id order.
    [through] = {host for host, _ in uncordons}
    assert through in ("lab-n1", "lab-n2", "lab-n3")
    assert uncordons == [(through, f"microk8s kubectl uncordon lab-n{i}") for i in range(2, 6)]
    # Uncordoned only once every node was Ready (the last readiness poll came before the first uncordon).
    polls = [i for i, c in enumerate(after) if c[1] == "microk8s kubectl get nodes -o json"]
    assert max(after.index(s) for s in starts) < min(polls) <= max(polls) < after.index(uncordons[0])
    session.expire_all()
    assert not any(n.cordoned_by_mko for n in session.scalars(select(Node)))


def test_api_force_shutdown_refuses_a_node_with_a_wrong_host_key_and_runs_nothing_there(
    fast: Settings, session: Session, lab_factory: Any, admin_token: str
) -> None:
    running = lab_factory(3, ssh=True, boot_delay=0.1)
    cluster = configure_microk8s(running, control_planes=1)
    _, nodes = register_lab(session, running)
    lines = running.known_hosts_lines()
    # lab-n3 now presents a key other than the recorded one (reinstalled, or an impostor).
    recorded = asyncssh.generate_private_key("ssh-ed25519")
    fast.ssh_known_hosts.write_text(
        f"{lines[0]}\n{lines[1]}\n[10.213.0.13]:2222 {recorded.export_public_key().decode().strip()}\n"
    )
    presented = asyncssh.import_public_key(lines[2].split(" ", 1)[1]).get_fingerprint("sha256")
    power_up(running, cluster)
    third = nodes[2]

    with _api(fast, running, admin_token) as client:
        dry = client.post("/api/clusters/1/shutdown", json={"dry_run": True, "force": True})
        assert dry.status_code == 200, dry.text
        assert dry.json()["plan"]["lines"] == [
            "force shutdown (no drains) of cluster 1 (lab); drain host: lab-n1",
            "1. workers, in parallel:",
            "   microk8s stop  lab-n2 (over SSH)",
            "   power off      lab-n2 (systemctl poweroff over SSH)",
            "   microk8s stop  lab-n3 (over SSH)",
            "   power off      lab-n3 (systemctl poweroff over SSH)",
            "2. then the drain host, last of all:",
            "   microk8s stop  lab-n1 (over SSH)",
            "   power off      lab-n1 (systemctl poweroff over SSH)",
        ]
        assert stand_in_calls(running) == [] and session.scalars(select(Operation)).all() == []

        response = client.post("/api/clusters/1/shutdown", json={"force": True})
        assert response.status_code == 202, response.text
        url = response.json()["operation_url"]
        assert response.headers["location"] == url
        done = wait_until(
            lambda: (op := client.get(url).json())["status"] != "running" and op, 20, what="the shutdown"
        )
    assert done["status"] == "partial"
    assert done["result"]["refused"] == ["lab-n3"] and done["result"]["powered_off"] == ["lab-n2", "lab-n1"]
    steps = {step["name"]: step for step in done["steps"]}
    assert steps["host keys"]["status"] == "failed"
    assert steps["host keys"]["message"] == "2 verified, 1 refused (lab-n3)"
    why = steps["refuse lab-n3"]["message"]
    assert why.startswith(f"node {third.id} (lab-n3): HOST KEY CHANGED for 10.213.0.13:2222: known ")
    assert f"known ssh-ed25519 {recorded.get_fingerprint('sha256')}, presented ssh-ed25519 {presented}" in why
    assert "nothing was run" in why and f"mko node trust {third.id} --replace" in why
    assert not any(name.endswith("lab-n3") and name != "refuse lab-n3" for name in steps)
    # Nothing ran on lab-n3, nothing anywhere was drained; the others went down, worker first.
    calls = stand_in_calls(running)
    assert [c for c in calls if c[0] == "lab-n3"] == []
    assert calls == [
        ("lab-n2", "microk8s stop"),
        ("lab-n2", "snap stop microk8s --disable"),
        ("lab-n2", "systemctl poweroff"),
        ("lab-n1", "microk8s stop"),
        ("lab-n1", "systemctl poweroff"),
    ]
    assert running.nodes[2].power.is_on and cluster.nodes()["lab-n3"]["ready"]


def test_a_scheduled_shutdown_runs_the_ordered_shutdown_as_its_own_operation(
    fast: Settings, session: Session, lab_factory: Any
) -> None:
    running, _ = cluster_up(fast, session, lab_factory, 2)
    created = create_schedule(
        session,
        fast,
        ScheduleCreate(name="night", cron="0 23 * * *", cluster_id=1, action=ScheduleAction.SHUTDOWN),
        now=datetime(2026, 11, 27, 22, 59, 30, tzinfo=UTC),
    )
    factory = make_session_factory(make_engine(fast.database_url))
    at = datetime(2026, 11, 27, 23, 0, 5, tzinfo=UTC)
    scheduler = Scheduler(factory, fast, clock=lambda: at, sleep=asyncio.sleep)

    async def tick() -> list[Operation]:
        return list(await asyncio.gather(*await scheduler.tick()))

    with enter_netns(running.lab.orch):
        [run] = asyncio.run(tick())
    assert (run.kind, run.status, run.actor) == (
        "schedule_shutdown",
        OperationStatus.SUCCEEDED,
        f"schedule:{created.id}",
    )
    shutdown_op = one_operation(session, "cluster_shutdown")
    assert run.result == {"shutdown_operation_id": shutdown_op.id}
    assert shutdown_op.actor == f"schedule:{created.id}" and shutdown_op.status == OperationStatus.SUCCEEDED
    assert [c for c in stand_in_calls(running) if "poweroff" in c[1]] == [
        ("lab-n2", "systemctl poweroff"),
        ("lab-n1", "systemctl poweroff"),
    ]
    assert get_node(session, 2).cordoned_by_mko is True


def test_a_node_whose_ssh_never_answered_is_not_reported_powered_off(
    fast: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    running, _ = cluster_up(fast, session, lab_factory, 2)
    running.nodes[1].power.power_off()  # lab-n2 is down (or cut off) before the shutdown starts

    result = orch_cli(cli, running, "cluster", "shutdown", "1", "--yes", "--json")
    assert result.exit_code == 1, result.stderr
    body = json.loads(result.stdout)
    assert (body["status"], body["powered_off"], body["unconfirmed"]) == ("partial", ["lab-n1"], ["lab-n2"])
    operation = one_operation(session, "cluster_shutdown")
    steps = {step.name: step for step in operation.steps}
    assert steps["host keys"].message == "1 verified, 1 not answering (lab-n2)"
    never = steps["poweroff lab-n2"]
    assert never.status == OperationStatus.FAILED
    assert never.message.startswith("unconfirmed: SSH did not answer, so mko cannot tell whether it is off (")
    assert never.detail["confirmed"] is False
    confirmed = steps["poweroff lab-n1"]
    assert confirmed.status == OperationStatus.SUCCEEDED and confirmed.detail["confirmed"] is True
    assert [call for call in stand_in_calls(running) if call[0] == "lab-n2"] == []
