"""Kubernetes-aware shutdown and recovery against real sshd in lab namespaces (issue 21).

The nodes run the lab's ``microk8s`` stand-in (mko.lab.microk8s: its output and exit codes copy MicroK8s
1.29's ``dbctl``/``status`` and kubectl 1.29's ``drain``/``get``/``scale``): workloads with
PersistentVolumeClaims, Longhorn volumes that detach some time after their last pod went, a datastore
backup written as a real tar.gz archive, and a quorum that a power loss can leave lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mko.lab.netns import enter_netns
from mko.platform.db.models.inventory import Node
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.outages import ScaledWorkload
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.ssh.client import SshTarget, connect
from mko.wol.node_state import states_for
from mko.wol.reachability import Refresher
from support.cluster import cluster_up, one_operation, orch_cli, stand_in_calls
from support.ups import wait_until

WORKLOADS = [
    # A StatefulSet whose claims Longhorn serves, a Deployment on hostpath storage, one with no volume.
    {
        "ns": "shop",
        "kind": "StatefulSet",
        "name": "db",
        "replicas": 2,
        "labels": {"app": "db"},
        "claim_templates": [{"name": "data", "storageClass": "longhorn"}],
    },
    {
        "ns": "shop",
        "kind": "Deployment",
        "name": "web",
        "replicas": 3,
        "labels": {"app": "web"},
        "volumes": [{"name": "uploads", "storageClass": "microk8s-hostpath"}],
    },
    {"ns": "shop", "kind": "Deployment", "name": "cache", "replicas": 2, "labels": {"app": "cache"}},
]
LONGHORN = {
    "detach_delay": 1.0,
    "volumes": [
        {"name": "pvc-5f1c0a7e", "pvc": "shop/data-db-0"},
        {"name": "pvc-9b24d3c1", "pvc": "shop/data-db-1"},
    ],
}


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, result.stdout + result.stderr
    return result


def test_longhorn_workloads_are_scaled_down_detached_backed_up_and_restored(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any, client: TestClient, web: Any
) -> None:
    running, cluster = cluster_up(
        settings, session, lab_factory, 3, workloads=WORKLOADS, longhorn=LONGHORN, retry_delay=0.2
    )
    _ok(
        orch_cli(
            cli, running, "cluster", "settings", "1", "--storage-class", "longhorn", "--backup-keep", "2"
        )
    )

    result = _ok(orch_cli(cli, running, "cluster", "shutdown", "1", "--yes", "--json"))
    body = json.loads(result.stdout)
    assert body["status"] == "succeeded", body["summary"]
    operation = one_operation(session, "cluster_shutdown")
    steps = {step.name: step for step in operation.steps}
    # Only the StatefulSet on Longhorn storage was scaled (the filter), its replicas stored first.
    assert steps["quiesce"].message == (
        "scaled 1 workload(s) mounting PersistentVolumes to zero: shop/StatefulSet/db (2)"
    )
    assert cluster.replicas() == {
        "shop/StatefulSet/db": 0,
        "shop/Deployment/web": 3,
        "shop/Deployment/cache": 2,
    }
    [row] = session.scalars(select(ScaledWorkload)).all()
    assert (row.namespace, row.kind, row.name, row.replicas, row.operation_id) == (
        "shop",
        "StatefulSet",
        "db",
        2,
        operation.id,
    )
    # The power-off waited until Longhorn had detached both volumes (they take 1 s after their pods).
    detached = steps["longhorn volumes"]
    assert detached.status == OperationStatus.SUCCEEDED and detached.detail["attached"] == []
    waited = float(detached.message.removeprefix("every Longhorn volume detached after ").removesuffix(" s"))
    assert waited >= 1.0
    calls = stand_in_calls(running)
    polls = [i for i, c in enumerate(calls) if c[1].startswith("microk8s kubectl get volumes.longhorn.io")]
    first_drain = next(i for i, c in enumerate(calls) if " drain " in c[1])
    scaled = calls.index(("lab-n1", "microk8s kubectl scale statefulset/db --replicas=0 -n shop"))
    assert calls[scaled - 1] == ("lab-n1", "microk8s kubectl get deploy,sts -A -o json")
    assert scaled < min(polls) and len(polls) >= 2 and max(polls) < first_drain

    # The backup: listed by the CLI and the API, stored privately, holding the datastore's keys.
    listed = json.loads(_ok(orch_cli(cli, running, "cluster", "backups", "1", "--json")).stdout)
    assert [b["name"] for b in listed] == [body["backup"]["name"]]
    [backup] = listed
    assert backup["operation_id"] == operation.id and backup["node"] == "lab-n1"
    path = Path(backup["path"])
    assert path.parent == settings_dir(settings) / "cluster-1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with tarfile.open(path) as archive:
        keys = [m.name for m in archive.getmembers() if m.name.endswith(".key")]
    assert len(keys) == backup["keys"] >= 5
    assert steps["backup lab-n1"].detail["backup"]["sha256"] == backup["sha256"]
    assert client.get("/api/clusters/1/backups").json() == listed
    page = web.get(f"/operations/{operation.id}")
    assert page.status_code == 200
    assert f'<a href="/clusters/1/backups">{backup["name"]}</a>' in page.text
    listing = web.get("/clusters/1/backups")
    assert listing.status_code == 200 and f"<code>{backup['path']}</code>" in listing.text

    # Power is back: the recovery gives the StatefulSet its 2 replicas once every node is Ready.
    running.power_on_all()
    before = len(stand_in_calls(running))
    recovered = json.loads(
        _ok(orch_cli(cli, running, "cluster", "recover", "1", "--timeout", "30", "--json")).stdout
    )
    assert recovered["status"] == "succeeded", recovered["summary"]
    assert recovered["restored"] == ["shop/StatefulSet/db (2)"]
    assert cluster.replicas()["shop/StatefulSet/db"] == 2
    after = stand_in_calls(running)[before:]
    restore = after.index(
        ("lab-n1", "microk8s kubectl scale statefulset/db --replicas=2 --current-replicas=0 -n shop")
    )
    assert max(i for i, c in enumerate(after) if "uncordon" in c[1]) < restore
    session.expire_all()
    assert session.scalars(select(ScaledWorkload)).all() == []
    recovery = {s.name: s for s in one_operation(session, "cluster_recover").steps}
    assert recovery["datastore"].message == (
        "microk8s is running on lab-n1; high-availability: no; 1 datastore voter(s): 10.213.0.11:19001"
    )


def settings_dir(settings: Settings) -> Path:
    """Where backups go by default: dqlite-backups beside the SQLite database."""
    return Path(settings.database_url.removeprefix("sqlite:///")).parent / "dqlite-backups"


def test_a_volume_that_stays_attached_is_reported_and_a_required_backup_stops_the_shutdown(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    longhorn = {"volumes": [{"name": "pvc-5f1c0a7e", "pvc": "shop/data-db-0", "stuck": True}]}
    running, cluster = cluster_up(
        settings, session, lab_factory, 2, workloads=WORKLOADS[:1], longhorn=longhorn, backup={"empty": True}
    )
    _ok(orch_cli(cli, running, "cluster", "settings", "1", "--backup-required", "--detach-timeout", "1"))

    # An empty archive (canonical/microk8s #4308) is no backup: with backup_required nothing is stopped.
    stopped = orch_cli(cli, running, "cluster", "shutdown", "1", "--yes", "--json")
    assert stopped.exit_code == 1
    body = json.loads(stopped.stdout)
    assert body["status"] == "cancelled" and body["powered_off"] == []
    assert [c[1].split(" -o ")[0] for c in stand_in_calls(running)] == ["microk8s dbctl backup"]
    steps = {s.name: s for s in one_operation(session, "cluster_shutdown").steps}
    assert steps["backup lab-n1"].message.startswith(
        "`microk8s dbctl backup` exited 0 but its archive ("
    ) and steps["backup lab-n1"].message.endswith(
        "holds no datastore keys (canonical/microk8s #4308); backup_required is set: the shutdown stops,"
        " nothing was stopped"
    )
    assert steps["backup lab-n1"].detail["state"] == "empty"
    assert all(node.power.is_on for node in running.nodes)
    assert json.loads(_ok(orch_cli(cli, running, "cluster", "backups", "1", "--json")).stdout) == []

    # Optional backup: reported, the shutdown goes on; the stuck volume is named, then power goes.
    _ok(orch_cli(cli, running, "cluster", "settings", "1", "--backup-optional"))
    cluster.update(backup={"fail": True})
    session.expire_all()
    done = orch_cli(cli, running, "cluster", "shutdown", "1", "--yes", "--json")
    report = json.loads(done.stdout)
    assert report["status"] == "partial" and sorted(report["powered_off"]) == ["lab-n1", "lab-n2"]
    assert report["failures"][0] == "backup: `microk8s dbctl backup` exited 1: Backup process failed. 1"
    longhorn_failure = [f for f in report["failures"] if f.startswith("longhorn: ")]
    assert len(longhorn_failure) == 1
    assert longhorn_failure[0].startswith("longhorn: still attached after ")
    assert longhorn_failure[0].endswith(": pvc-5f1c0a7e (pvc shop/data-db-0) on lab-n2, state=detaching")


def test_a_recovery_without_dqlite_quorum_is_diagnosed_and_points_to_the_latest_backup(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    running, cluster = cluster_up(settings, session, lab_factory, 3, control_planes=3)
    _ok(orch_cli(cli, running, "cluster", "shutdown", "1", "--yes", "--json"))
    [backup] = json.loads(_ok(orch_cli(cli, running, "cluster", "backups", "1", "--json")).stdout)

    # Power returns, but the voters' cluster.yaml went stale with the power loss: no dqlite leader.
    cluster.update(quorum_lost=True)
    running.power_on_all()
    result = orch_cli(cli, running, "cluster", "recover", "1", "--timeout", "3", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["diagnosis"]["kind"] == "quorum_lost"
    steps = {s.name: s for s in one_operation(session, "cluster_recover").steps}
    diagnosis = steps["diagnosis"]
    assert diagnosis.status == OperationStatus.FAILED
    assert diagnosis.message.startswith(
        "lost dqlite quorum: the API on lab-n1, lab-n2, lab-n3 cannot read its datastore (no dqlite leader);"
        " 3 of 3 voter(s) started (lab-n1, lab-n2, lab-n3)."
    )
    assert "https://microk8s.io/docs/restore-quorum" in diagnosis.message
    assert diagnosis.message.endswith(
        f"restore procedure: docs/shutdown.md, “Restoring the datastore”; latest backup: {backup['path']}"
        f" (taken {backup['taken_at']} on lab-n1, {backup['keys']} keys)"
    )
    views = {v["hostname"]: v for v in diagnosis.detail["control_planes"]}
    assert views["lab-n2"]["api_error"] == (
        "Error from server (Timeout): the server was unable to return a response in the time allotted, but"
        " may still be processing the request (get nodes)"
    )
    assert (
        views["lab-n2"]["status"] == "microk8s is not running. Use microk8s inspect for a deeper inspection."
    )
    assert "diagnosis: lost dqlite quorum" in report["summary"]


def test_a_kubelite_crash_loop_is_diagnosed(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    running, _ = cluster_up(settings, session, lab_factory, 2, crashloop=["lab-n1"])
    result = orch_cli(cli, running, "cluster", "recover", "1", "--timeout", "2", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["diagnosis"]["kind"] == "kubelite_crashloop"
    assert report["diagnosis"]["message"].startswith(
        "the API refused connections on lab-n1 for the whole recovery although `microk8s start` ran:"
        " kubelite is not serving (a crash loop)"
    )
    assert (
        "restore procedure: docs/shutdown.md, “Restoring the datastore” (mko holds no backup"
        in (report["diagnosis"]["message"])
    )


def test_a_single_node_maintenance_drain_never_bypasses_a_disruption_budget(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    running, cluster = cluster_up(settings, session, lab_factory, 3, fail_drain=["lab-n3"], retry_delay=0.2)
    _ok(orch_cli(cli, running, "cluster", "settings", "1", "--drain-grace", "1"))

    free = json.loads(_ok(orch_cli(cli, running, "cluster", "drain", "2", "--yes", "--json")).stdout)
    assert (free["status"], free["summary"]) == ("succeeded", "lab-n2 drained")

    result = orch_cli(cli, running, "cluster", "drain", "3", "--yes", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["status"], report["summary"].split(";")[0]) == ("failed", "lab-n3 not drained")
    drains = [c for c in stand_in_calls(running) if " drain " in c[1]]
    assert drains == [
        ("lab-n1", "microk8s kubectl drain lab-n2 --ignore-daemonsets --delete-emptydir-data --timeout=1s"),
        ("lab-n1", "microk8s kubectl drain lab-n3 --ignore-daemonsets --delete-emptydir-data --timeout=1s"),
    ]  # no --disable-eviction, no backup, no quiesce, nothing stopped
    assert not any("dbctl" in c[1] or " stop" in c[1] or "poweroff" in c[1] for c in stand_in_calls(running))
    session.expire_all()
    operations = session.scalars(select(Operation).where(Operation.kind == "node_drain")).all()
    assert [(o.target_type, o.target_id) for o in operations] == [("node", 2), ("node", 3)]
    steps = {s.name: s for s in operations[1].steps}
    assert steps["drain lab-n3"].message.startswith(
        "eviction refused for 1 s by a PodDisruptionBudget: default/web-pdb (minAvailable=1, healthy 1/1,"
    )
    fallback = steps["fallback lab-n3"]
    assert fallback.status == OperationStatus.CANCELLED
    assert fallback.message.startswith(
        "not taken: a single node's maintenance never bypasses a PodDisruptionBudget; lab-n3 stays cordoned"
    )
    assert cluster.nodes()["lab-n3"]["cordoned"] and all(n.power.is_on for n in running.nodes)


def test_replicas_survive_mko_killed_mid_shutdown_and_the_next_recovery_restores_them(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    longhorn = dict(LONGHORN, detach_delay=30.0)  # the shutdown sits in the Longhorn wait when killed
    running, cluster = cluster_up(settings, session, lab_factory, 2, workloads=WORKLOADS, longhorn=longhorn)
    command = ["ip", "netns", "exec", running.lab.orch, sys.executable, "-m", "mko"]
    shutdown = subprocess.Popen(
        [*command, "cluster", "shutdown", "1", "--yes", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    try:
        # Both workloads scaled (db is the last of the two): mko is now waiting on Longhorn.
        wait_until(lambda: cluster.replicas()["shop/StatefulSet/db"] == 0, 60, what="the quiesce")
    finally:
        shutdown.kill()  # SIGKILL: no cleanup, as a power cut of mko's host
        shutdown.wait()
    assert cluster.replicas() == {
        "shop/StatefulSet/db": 0,
        "shop/Deployment/web": 0,
        "shop/Deployment/cache": 2,
    }
    session.expire_all()
    stored = {(r.kind, r.name): r.replicas for r in session.scalars(select(ScaledWorkload))}
    assert stored == {("StatefulSet", "db"): 2, ("Deployment", "web"): 3}
    assert all(node.power.is_on for node in running.nodes)  # killed before anything was stopped

    # The next start of mko: the recovery knows what to give back, from the database alone.
    recovered = json.loads(
        _ok(orch_cli(cli, running, "cluster", "recover", "1", "--timeout", "30", "--json")).stdout
    )
    assert recovered["status"] == "succeeded", recovered["summary"]
    assert sorted(recovered["restored"]) == ["shop/Deployment/web (3)", "shop/StatefulSet/db (2)"]
    assert cluster.replicas() == {
        "shop/StatefulSet/db": 2,
        "shop/Deployment/web": 3,
        "shop/Deployment/cache": 2,
    }
    session.expire_all()
    assert session.scalars(select(ScaledWorkload)).all() == []
    [killed] = session.scalars(select(Operation).where(Operation.kind == "cluster_shutdown")).all()
    assert killed.status == OperationStatus.FAILED and killed.summary.startswith("interrupted: owner pid ")


def _while_left_running(
    settings: Settings, session: Session, cli: CliRunner, running: Any, cluster: Any, verb: str, *args: str
) -> Any:
    """The JSON answer of the CLI command ARGS, run while a ``microk8s VERB`` on lab-n1, sent by an mko
    that then lost power, still runs there (it goes on without it)."""
    node = session.scalars(select(Node).where(Node.hostname == "lab-n1")).one()
    target = SshTarget.of(node, settings)

    async def send() -> None:
        async with connect(target, settings) as connection:
            await connection.run(["microk8s", verb], sudo=True, timeout=30)

    def in_orch() -> None:
        with enter_netns(running.lab.orch):
            asyncio.run(send())

    left = threading.Thread(target=in_orch)
    left.start()
    try:
        wait_until(lambda: cluster.nodes()["lab-n1"].get("change_until"), 15, what=f"the {verb} to begin")
        return json.loads(_ok(orch_cli(cli, running, *args, "--json")).stdout)
    finally:
        left.join()


def _sent_again_after(running: Any, left: str, sent: str) -> None:
    """After the command LEFT running on lab-n1, SENT was refused at least once, then sent again."""
    calls = [command for host, command in stand_in_calls(running) if host == "lab-n1"]
    assert calls[calls.index(left) + 1 :].count(sent) >= 2, calls


def test_a_recovery_waits_for_a_stop_still_running_on_the_control_plane(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    # mko lost power while `microk8s stop` ran on lab-n1; that stop goes on without it. snapd refuses a
    # `microk8s start` until the stop's change ends: the recovery retries rather than calling the node
    # started, and lab-n1 ends up running (it used to stay stopped when the start slipped in first).
    running, cluster = cluster_up(settings, session, lab_factory, 2)
    cluster.update(delays={"stop": {"lab-n1": 3.0}})
    recovered = _while_left_running(
        settings, session, cli, running, cluster, "stop", "cluster", "recover", "1", "--timeout", "30"
    )
    assert recovered["status"] == "succeeded", recovered["summary"]
    n1 = cluster.nodes()["lab-n1"]
    assert n1["enabled"] and n1["running"] and n1["ready"]
    _sent_again_after(running, "microk8s stop", "microk8s start")


def test_a_shutdown_waits_for_a_start_still_running_on_the_node(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    # Power flapping: a recovery's `microk8s start` on lab-n1 goes on without the mko that sent it, which
    # lost power again. snapd refuses the shutdown's `microk8s stop` until that start's change ends: the
    # shutdown sends it again, rather than powering lab-n1 off with its services enabled (they would
    # start at its next boot, before any recovery, and the stop step would be recorded as failed).
    running, cluster = cluster_up(settings, session, lab_factory, 1)
    # The stop comes right after the host keys: no backup, no quiesce. The start lasts long enough for
    # the stop to meet it even on a loaded machine (the stop then waits for it, so the test takes that).
    _ok(orch_cli(cli, running, "cluster", "settings", "1", "--no-backup", "--no-quiesce"))
    cluster.update(delays={"start": {"lab-n1": 8.0}})
    stopped = _while_left_running(
        settings, session, cli, running, cluster, "start", "cluster", "shutdown", "1", "--yes"
    )
    assert stopped["status"] == "succeeded", stopped["summary"]
    n1 = cluster.nodes()["lab-n1"]
    assert not n1["enabled"] and not n1["running"] and not running.nodes[0].power.is_on
    step = {s.name: s for s in one_operation(session, "cluster_shutdown").steps}["stop lab-n1"]
    assert step.status == OperationStatus.SUCCEEDED and step.detail["refused_while_busy"] >= 1, step.message
    assert step.message.startswith("Stopped. (refused "), step.message
    _sent_again_after(running, "microk8s start", "microk8s stop")


def test_recovery_shows_each_node_turning_ready_and_records_it_per_node(
    settings: Settings, session: Session, cli: CliRunner, lab_factory: Any
) -> None:
    running, cluster = cluster_up(settings, session, lab_factory, 3, ready_delay=0.3)
    # Power came back to lab-n1 and lab-n2 (their MicroK8s turns Ready 1.5 s after boot); lab-n3's
    # machine still has no power in the model, so Kubernetes keeps it NotReady although it answers SSH.
    cluster.update(ready_delay=1.5)
    for hostname in ("lab-n1", "lab-n2", "lab-n3"):
        cluster.halted(hostname)
    cluster.booted("lab-n1")
    cluster.booted("lab-n2")
    result = orch_cli(cli, running, "cluster", "recover", "1", "--timeout", "6")
    assert result.exit_code == 1, result.stdout
    lines = result.stdout.splitlines()
    # One line per node as Kubernetes calls it Ready (or as the timeout leaves it), plain off a terminal.
    ready = [line for line in lines if ": Ready: " in line]
    assert sorted(line.split(":")[0].strip() for line in ready) == ["✓ lab-n1", "✓ lab-n2", "✗ lab-n3"]
    assert all(re.search(r"Ready: after \d+\.\ds \(kubectl on lab-n1\)$", line) for line in ready[:2]), ready
    assert re.search(r"lab-n3: Ready: not Ready after \d+\.\ds: NotReady$", ready[2]), ready
    assert lines[-1].startswith("operation ") and "2/3 Ready" in lines[-1]
    # The same as steps of the operation (what the web page follows live), one per node, with its id.
    operation = one_operation(session, "cluster_recover")
    steps = [s for s in operation.steps if s.name.startswith("Ready ")]
    assert [(s.name, s.node_id, s.status) for s in sorted(steps, key=lambda s: s.node_id or 0)] == [
        ("Ready lab-n1", 1, OperationStatus.SUCCEEDED),
        ("Ready lab-n2", 2, OperationStatus.SUCCEEDED),
        ("Ready lab-n3", 3, OperationStatus.FAILED),
    ]
    assert steps[-1].message.endswith(": NotReady")
    # The waiting phase kept the operation's summary current until the end replaced it.
    assert "2/3 Ready" in operation.summary

    # The dashboard's states, from what is stored: the background probe finds every node answering
    # (SSH), and the recovery's readiness makes lab-n1 and lab-n2 Ready, lab-n3 only up.
    with enter_netns(running.lab.orch):
        asyncio.run(refresh_once(settings))
    states = states_for(session, settings, [1, 2, 3])
    assert {i: s.state.value for i, s in states.items()} == {1: "Ready", 2: "Ready", 3: "up"}
    assert states[3].note.startswith("answers; Kubernetes not Ready at ")


async def refresh_once(settings: Settings) -> None:
    """One pass of the server's background probes, storing every node's reachability."""
    engine = make_engine(settings.database_url)
    try:
        await Refresher(make_session_factory(engine), interval=30, timeout=2.0).refresh()
    finally:
        engine.dispose()
