"""`mko cluster check` against real peers: lab nodes with real sshd (host keys verified), the lab's
ethtool stand-in, MicroK8s' kubelet args and logind drop-ins at their real paths (mko.lab.nodefiles),
OpenIPMI's ipmi_sim and the sushy-tools Redfish emulator.

* lab-n1  control plane; graceful node shutdown configured (30 s, logind 30 s); Wake-on g;
* lab-n2  worker; kubelet has a 30 s grace period but logind keeps its 5 s default; Wake-on d;
* lab-n3  worker behind ipmi_sim (whose Get Chassis Status always reads "always-off"); kubelet default;
* lab-n4  worker behind sushy-tools (no PowerRestorePolicy in its ComputerSystem);
* lab-n5  worker whose host key mko has not trusted.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from mko.cluster.options import update_options
from mko.cluster.plan import plan_shutdown
from mko.cluster.preflight import run_check, start_check
from mko.cluster.shutdown import run_shutdown, start_shutdown
from mko.lab.harness import RunningLab
from mko.lab.netns import enter_netns
from mko.lab.nodefiles import graceful_shutdown, login_user, sudoers
from mko.operations.records import Actor, start_operation
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.db.models.schedules import ScheduleAction
from mko.platform.db.session import make_engine, make_session_factory
from mko.platform.settings import Settings
from mko.schedules.actions import PreparedRun, RunContext, run_scheduled_shutdown
from support.cluster import cluster_up, one_operation, orch_process
from support.peers import IpmiSim, RedfishEmulator

pytestmark = pytest.mark.integration


def _ok(result: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert result.returncode == code, result.stdout + result.stderr
    return result


def _redfish_node(running: RunningLab, node_id: int, redfish: RedfishEmulator) -> None:
    """Power NODE_ID through the emulator, as an operator would configure it (the password on stdin)."""
    _ok(
        orch_process(
            running, "wol", "configure", str(node_id), "--method", "redfish", "--redfish-url", redfish.url,
            "--bmc-username", RedfishEmulator.USER, "--bmc-password", "-",
            "--bmc-ca-file", str(redfish.cafile), stdin=RedfishEmulator.PASSWORD + "\n",
        )
    )  # fmt: skip


def _prepare(settings: Settings, session: Session, lab_factory: Any) -> RunningLab:
    """Five Ready lab nodes: n1 and n2 as the module docstring says, n5's host key forgotten."""
    running, _cluster = cluster_up(settings, session, lab_factory, 5, control_planes=1)
    n1, n2 = running.node("n1"), running.node("n2")
    assert n1.system is not None and n2.system is not None
    graceful_shutdown(n1.system, "30s", "10s", inhibit_delay=30)
    graceful_shutdown(n2.system, "30s", "10s", inhibit_delay=None)
    n2.system.set_nic(wake_on="d")
    # lab-n5's key is forgotten, as after a reinstall nobody has checked yet.
    known = settings.ssh_known_hosts
    kept = [line for line in known.read_text().splitlines() if "10.213.0.15" not in line]
    known.write_text("".join(line + "\n" for line in kept))
    return running


@pytest.fixture
def checked_lab(
    settings: Settings, session: Session, lab_factory: Any, tmp_path: Path
) -> Iterator[RunningLab]:
    """The lab of the module docstring, BMCs configured through the CLI (run as processes of their own:
    pyghmi's sockets stay in the namespace where a process first used them)."""
    running = _prepare(settings, session, lab_factory)
    (tmp_path / "ipmi").mkdir()
    (tmp_path / "redfish").mkdir()
    ipmi = IpmiSim(tmp_path / "ipmi", netns=running.lab.orch, power="1")
    redfish = RedfishEmulator(tmp_path / "redfish", netns=running.lab.orch, power_state="On")
    try:
        _ok(
            orch_process(
                running, "wol", "configure", "3", "--method", "ipmi", "--bmc-address", "127.0.0.1",
                "--bmc-port", str(ipmi.port), "--bmc-username", IpmiSim.USER, "--bmc-password", "-",
                stdin=IpmiSim.PASSWORD + "\n",
            )
        )  # fmt: skip
        _redfish_node(running, 4, redfish)
        yield running
    finally:
        redfish.stop()
        ipmi.stop()


@pytest.fixture
def plain_lab(settings: Settings, session: Session, lab_factory: Any) -> RunningLab:
    """The same lab with every node woken by Wake-on-LAN (no BMC), for checks run in this process."""
    return _prepare(settings, session, lab_factory)


# Without BMCs: lab-n3 and lab-n4 pass ssh and wol, fail graceful_shutdown (MicroK8s' default args).
PLAIN_SUMMARY = "5 node(s): 8 pass, 0 warn, 5 fail, 12 n/a; fail: lab-n2 graceful_shutdown, lab-n2 wol"


def _verdicts(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        node["hostname"]: {check: result["verdict"] for check, result in node["checks"].items()}
        for node in body["nodes"]
    }


def _reasons(body: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (node["hostname"], check): result["reason"]
        for node in body["nodes"]
        for check, result in node["checks"].items()
    }


def test_cluster_check_reports_every_node_with_the_fix_and_stores_it(
    session: Session, checked_lab: RunningLab
) -> None:
    running = checked_lab
    result = _ok(orch_process(running, "cluster", "check", "1", "--json"), code=1)  # a check failed
    body = json.loads(result.stdout)
    assert body["status"] == "failed"
    columns = ("ssh", "sudo", "graceful_shutdown", "wol", "restore_policy")
    assert {host: tuple(checks[c] for c in columns) for host, checks in _verdicts(body).items()} == {
        "lab-n1": ("pass", "n/a", "pass", "pass", "n/a"),
        "lab-n2": ("pass", "n/a", "fail", "fail", "n/a"),
        "lab-n3": ("pass", "n/a", "fail", "n/a", "warn"),
        "lab-n4": ("pass", "n/a", "fail", "n/a", "warn"),
        "lab-n5": ("fail", "n/a", "n/a", "n/a", "n/a"),
    }
    assert body["counts"] == {"pass": 6, "warn": 2, "fail": 5, "n/a": 12}
    why = _reasons(body)
    assert why[("lab-n1", "graceful_shutdown")] == (
        "shutdownGracePeriod 30 s (10 s for critical pods) in"
        " /var/snap/microk8s/current/args/kubelet-config.yaml; logind InhibitDelayMaxSec 30 s"
    )
    assert why[("lab-n1", "sudo")] == "logs in as root: mko runs its commands without sudo"
    assert why[("lab-n1", "wol")] == "Wake-on: g on veth0"
    # Each failing check names what fixes it.
    assert (
        "logind's InhibitDelayMaxSec is 5 s (systemd's default), shorter than shutdownGracePeriod 30 s"
        in (why[("lab-n2", "graceful_shutdown")])
    )
    assert (
        "InhibitDelayMaxSec=30 in /etc/systemd/logind.conf.d/99-kubelet.conf"
        in why[("lab-n2", "graceful_shutdown")]
    )
    assert why[("lab-n2", "wol")] == (
        "Wake-on: d on veth0: a magic packet would not wake it; run `mko wol enable 2`"
        " (ethtool -s veth0 wol g, made persistent)"
    )
    assert why[("lab-n3", "graceful_shutdown")].startswith(
        "graceful node shutdown is off: /var/snap/microk8s/current/args/kubelet names no --config"
    )
    assert "chassis policy always-on" in why[("lab-n3", "restore_policy")]
    assert why[("lab-n3", "restore_policy")].startswith("always-off: it stays off when mains returns")
    assert "does not expose ComputerSystem.PowerRestorePolicy" in why[("lab-n4", "restore_policy")]
    assert "mko node trust 5" in why[("lab-n5", "ssh")]
    assert why[("lab-n5", "wol")] == "not checked: no SSH session"
    # Stored: one step per node and check, the verdict in each; the same result over the API's read model.
    operation = one_operation(session, "cluster_check")
    assert operation.status == OperationStatus.FAILED and operation.result["counts"] == body["counts"]
    assert len(operation.steps) == 25
    step = next(s for s in operation.steps if s.name == "wol lab-n2")
    assert (step.status, step.detail["verdict"], step.node_id) == (OperationStatus.FAILED, "fail", 2)
    # What the checks ran on the node: the reads as root, never a change.
    n2 = running.node("n2").system
    assert n2 is not None
    assert [" ".join(c["argv"]) for c in n2.calls("ethtool")] == ["veth0"]
    assert n2.nic()["wake_on"] == "d"


def test_the_human_output_is_a_table_with_progress_and_a_clean_cluster_passes(
    session: Session, checked_lab: RunningLab, settings: Settings
) -> None:
    running = checked_lab
    text = _ok(orch_process(running, "cluster", "check", "1"), code=1).stdout
    assert "node    check              verdict  reason" in text
    assert "lab-n2  wol                fail     Wake-on: d on veth0" in text
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("operation ") and ": failed — 5 node(s): 6 pass, 2 warn, 5 fail, 12 n/a" in last


def test_a_shutdown_for_power_records_the_checks_and_never_stops_for_them(
    session: Session, plain_lab: RunningLab, settings: Settings
) -> None:
    running = plain_lab
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with enter_netns(running.lab.orch):

            async def shut() -> Operation:
                with factory() as own:
                    plan = await plan_shutdown(own, settings, 1, force=False)
                    prepared = start_shutdown(own, plan, Actor("rule:1"))
                return await run_shutdown(factory, settings, prepared, checks=True)

            done = asyncio.run(shut())
    finally:
        engine.dispose()
    shutdown = one_operation(session, "cluster_shutdown")
    preflight = next(s for s in shutdown.steps if s.name == "preflight")
    assert preflight.status == OperationStatus.FAILED
    assert preflight.message.startswith(PLAIN_SUMMARY)
    assert preflight.message.endswith("; the shutdown goes on (see `mko cluster check` for the fixes)")
    found = {(f["hostname"], f["check"]): f["verdict"] for f in preflight.detail["findings"]}
    assert found[("lab-n2", "wol")] == "fail" and len(found) == 25
    # Recorded before any node was touched, and the shutdown went on to power nodes off.
    names = [s.name for s in shutdown.steps]
    assert names.index("preflight") < min(i for i, n in enumerate(names) if n.startswith(("drain ", "stop ")))
    assert any(n.startswith("poweroff ") for n in names)
    assert done.result["preflight"]["counts"]["fail"] == 5


def test_a_scheduled_shutdown_of_a_cluster_that_requires_the_preflight_refuses_to_start(
    session: Session, plain_lab: RunningLab, settings: Settings
) -> None:
    running = plain_lab
    update_options(session, 1, {"preflight_required": True})
    schedule_run = start_operation(
        session, kind="schedule_run", target_type="cluster", target_id=1, actor=Actor("schedule:1")
    )
    run = PreparedRun(1, schedule_run.id, ScheduleAction.SHUTDOWN, (), {}, Actor("schedule:1"))
    engine = make_engine(settings.database_url)
    try:
        with enter_netns(running.lab.orch):
            done = asyncio.run(
                run_scheduled_shutdown(RunContext(make_session_factory(engine), settings), run)
            )
    finally:
        engine.dispose()
    assert done.status == OperationStatus.FAILED
    check = one_operation(session, "cluster_check")
    assert done.summary.startswith(
        f"not started: preflight check #{check.id} failed and this cluster requires it:"
        " lab-n2 graceful_shutdown:"
    )
    assert check.actor == "schedule:1" and check.summary.startswith(PLAIN_SUMMARY)
    session.expire_all()
    assert session.query(Operation).filter(Operation.kind == "cluster_shutdown").count() == 0
    # Nothing was touched: every node still answers and MicroK8s was neither drained nor stopped.
    assert all(n.power.state == "on" for n in running.nodes)


def test_a_check_started_in_process_reports_each_finding_as_it_ends(
    session: Session, plain_lab: RunningLab, settings: Settings
) -> None:
    running = plain_lab
    seen: list[tuple[str, str, OperationStatus]] = []
    prepared = start_check(session, 1, Actor("test"))
    engine = make_engine(settings.database_url)
    try:
        with enter_netns(running.lab.orch):
            operation = asyncio.run(
                run_check(make_session_factory(engine), settings, prepared, lambda *a: seen.append(a))
            )
    finally:
        engine.dispose()
    assert operation.status == OperationStatus.FAILED
    assert len(seen) == 25
    assert (
        "lab-n2",
        "wol: " + operation.result["nodes"][1]["checks"]["wol"]["reason"],
        OperationStatus.FAILED,
    ) in seen
    assert ("lab-n5", "wol: not checked: no SSH session", OperationStatus.CANCELLED) in seen
    assert (
        operation.summary
        == PLAIN_SUMMARY + ", lab-n3 graceful_shutdown, lab-n4 graceful_shutdown, lab-n5 ssh"
    )


def test_a_bmc_that_powers_on_by_itself_passes(
    settings: Settings, session: Session, lab_factory: Any, tmp_path: Path
) -> None:
    running, _ = cluster_up(settings, session, lab_factory, 1)
    redfish = RedfishEmulator(tmp_path, netns=running.lab.orch, power_state="On", restore_policy="AlwaysOn")
    try:
        _redfish_node(running, 1, redfish)
        body = json.loads(_ok(orch_process(running, "cluster", "check", "1", "--json"), code=1).stdout)
    finally:
        redfish.stop()
    assert (
        _reasons(body)[("lab-n1", "restore_policy")] == "AlwaysOn: it powers on by itself when mains returns"
    )
    assert _verdicts(body)["lab-n1"]["restore_policy"] == "pass"


# What mko runs as root, where a lab node's sudo finds it (secure_path puts /usr/local/sbin, the
# stand-ins' directory, first).
EVERY_COMMAND = [
    "/usr/local/sbin/microk8s", "/usr/local/sbin/snap", "/usr/local/sbin/systemctl",
    "/usr/local/sbin/shutdown", "/usr/local/sbin/ethtool",
    "/usr/bin/cat", "/usr/bin/grep", "/usr/bin/mktemp", "/usr/bin/rm",
]  # fmt: skip


def test_sudo_rights_are_read_from_the_nodes_real_sudo(
    settings: Settings, session: Session, lab_factory: Any
) -> None:
    running, _ = cluster_up(settings, session, lab_factory, 3)
    systems = [n.system for n in running.nodes]
    for index, system in enumerate(systems, start=1):
        assert system is not None
        login_user(system, "mko")
        _ok(orch_process(running, "node", "update", str(index), "--ssh-user", "mko"))
    assert systems[0] is not None and systems[2] is not None
    sudoers(systems[0], "mko", EVERY_COMMAND)  # lab-n1: everything; lab-n2: not a sudoer at all
    sudoers(systems[2], "mko", ["/usr/local/sbin/microk8s", "/usr/bin/cat"])  # lab-n3: too narrow
    body = json.loads(_ok(orch_process(running, "cluster", "check", "1", "--json"), code=1).stdout)
    verdicts, why = _verdicts(body), _reasons(body)
    assert [verdicts[h]["sudo"] for h in ("lab-n1", "lab-n2", "lab-n3")] == ["pass", "fail", "fail"], why
    assert why[("lab-n1", "sudo")] == "`sudo -n` allows all 17 command(s) mko runs as root"
    # Through sudo, lab-n1's checks read the kubelet args and the NIC as root.
    assert why[("lab-n1", "wol")] == "Wake-on: g on veth0"
    assert why[("lab-n1", "graceful_shutdown")].startswith("graceful node shutdown is off:")
    assert why[("lab-n2", "sudo")].startswith(
        "sudo asks mko for a password (mko runs `sudo -n`): add a NOPASSWD rule,"
        " e.g. `mko ALL=(root) NOPASSWD:"
    )
    assert (
        why[("lab-n2", "wol")] == "`ethtool veth0` failed: sudo: a password is required: see the sudo check"
    )
    assert why[("lab-n3", "sudo")].startswith("sudo refuses 8 of 12 command(s) mko runs as root (snap stop")
    calls = running.node("n1").system.calls("ethtool")  # type: ignore[union-attr]
    assert calls[-1]["argv"] == ["veth0"] and calls[-1]["uid"] == 0  # run as root, through sudo


def test_a_scheduled_shutdown_whose_preflight_passes_runs_and_keeps_the_findings(
    settings: Settings, session: Session, lab_factory: Any
) -> None:
    running, _ = cluster_up(settings, session, lab_factory, 2)
    for node in running.nodes:
        assert node.system is not None
        graceful_shutdown(node.system)
    update_options(session, 1, {"preflight_required": True, "backup": False, "quiesce": False})
    schedule_run = start_operation(
        session, kind="schedule_run", target_type="cluster", target_id=1, actor=Actor("schedule:1")
    )
    run = PreparedRun(1, schedule_run.id, ScheduleAction.SHUTDOWN, (), {}, Actor("schedule:1"))
    engine = make_engine(settings.database_url)
    try:
        with enter_netns(running.lab.orch):
            done = asyncio.run(
                run_scheduled_shutdown(RunContext(make_session_factory(engine), settings), run)
            )
    finally:
        engine.dispose()
    assert done.status == OperationStatus.SUCCEEDED, done.summary
    check = one_operation(session, "cluster_check")
    assert check.status == OperationStatus.SUCCEEDED
    shutdown = one_operation(session, "cluster_shutdown")
    preflight = next(s for s in shutdown.steps if s.name == "preflight")
    assert (preflight.status, preflight.message) == (
        OperationStatus.SUCCEEDED,
        "2 node(s): 6 pass, 0 warn, 0 fail, 4 n/a (checked before the shutdown started)",
    )
    assert shutdown.result["powered_off"] == ["lab-n2", "lab-n1"]


def test_a_shutdown_for_power_waits_for_its_preflight_no_longer_than_it_may(
    settings: Settings, session: Session, lab_factory: Any
) -> None:
    running, _ = cluster_up(settings, session, lab_factory, 2)
    update_options(session, 1, {"backup": False, "quiesce": False})
    hurried = settings.model_copy(update={"preflight_shutdown_wait": 0.0})
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with enter_netns(running.lab.orch):

            async def shut() -> Operation:
                with factory() as own:
                    prepared = start_shutdown(
                        own, await plan_shutdown(own, hurried, 1, force=False), Actor("rule:1")
                    )
                return await run_shutdown(factory, hurried, prepared, checks=True)

            done = asyncio.run(shut())
    finally:
        engine.dispose()
    assert done.status == OperationStatus.SUCCEEDED, done.summary
    preflight = next(s for s in one_operation(session, "cluster_shutdown").steps if s.name == "preflight")
    assert preflight.status == OperationStatus.CANCELLED
    assert preflight.message.startswith(
        "not finished within 0 s (MKO_PREFLIGHT_SHUTDOWN_WAIT): the shutdown went on; found so far:"
    )
    assert preflight.detail["finished"] is False
    assert "preflight" not in done.result
