"""The preflight's readings (kubelet args and configuration, logind drop-ins, Go durations, the IPMI
chassis status byte), its sudo check against sudo 1.9's answers, and its API, CLI and web adapters."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mko.cluster.preflight import (
    CheckReport,
    CheckTarget,
    Finding,
    Verdict,
    _check_sudo,
    _grace_periods,
    expand_snap,
    go_duration,
    kubelet_flags,
    logind_delay,
    sudo_commands,
)
from mko.platform.db.models.inventory import Node, NodeRole
from mko.power.base import NodeSnapshot
from mko.power.drivers.ipmi import restore_policy_of
from mko.ssh.client import CommandResult


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1m30s", 90), ("0s", 0), ("0", 0), ("1h", 3600), ("500ms", 0.5), ("2m0s", 120)],
)
def test_go_durations_read_as_kubelet_reads_them(text: str, seconds: float) -> None:
    assert go_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "thirty", "30 s", "1m30", "-5s"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        go_duration(text)


def test_kubelet_args_are_read_as_the_snap_passes_them() -> None:
    text = (
        "--kubeconfig=${SNAP_DATA}/credentials/kubelet.config\n"
        '--node-labels="microk8s.io/cluster=true,a=b"\n'
        "# --config=/nowhere.yaml\n"
        "--config ${SNAP_DATA}/args/kubelet.yaml\n"
        "--feature-gates=DevicePlugins=true\n"
        "--config=$SNAP_DATA/args/later.yaml\n"
    )
    flags = kubelet_flags(text)
    assert flags["--node-labels"] == "microk8s.io/cluster=true,a=b"
    assert flags["--config"] == "$SNAP_DATA/args/later.yaml"  # the last one wins, as in kubelet
    assert expand_snap(flags["--config"]) == "/var/snap/microk8s/current/args/later.yaml"
    assert expand_snap("${SNAP_COMMON}/x ${SNAP}/y") == "/var/snap/microk8s/common/x /snap/microk8s/current/y"


def test_grace_periods_come_from_the_kubelet_configuration() -> None:
    assert _grace_periods("shutdownGracePeriod: 1m\nshutdownGracePeriodCriticalPods: 20s\n") == (60, 20)
    assert _grace_periods("kind: KubeletConfiguration\n") == (0, 0)
    by_priority = (
        "shutdownGracePeriodByPodPriority:\n"
        "- priority: 100000\n  shutdownGracePeriodSeconds: 10\n"
        "- priority: 0\n  shutdownGracePeriodSeconds: 60\n"
    )
    assert _grace_periods(by_priority) == (60, 0)
    with pytest.raises(ValueError, match="not YAML"):
        _grace_periods("a: [")
    with pytest.raises(ValueError, match="not a KubeletConfiguration"):
        _grace_periods("- a\n- b\n")


def test_logind_reads_its_file_then_drop_ins_by_name_with_etc_first() -> None:
    assert logind_delay("") == (5.0, "systemd's default")
    assert logind_delay("/etc/systemd/logind.conf:#InhibitDelayMaxSec=90\n") == (5.0, "systemd's default")
    lines = (
        "/etc/systemd/logind.conf:InhibitDelayMaxSec=10\n"
        "/usr/lib/systemd/logind.conf.d/99-kubelet.conf:InhibitDelayMaxSec=1min 30s\n"
        "/etc/systemd/logind.conf.d/50-site.conf:InhibitDelayMaxSec=20\n"
    )
    assert logind_delay(lines) == (90.0, "/usr/lib/systemd/logind.conf.d/99-kubelet.conf")
    hidden = lines + "/etc/systemd/logind.conf.d/99-kubelet.conf:InhibitDelayMaxSec=45s\n"
    assert logind_delay(hidden) == (45.0, "/etc/systemd/logind.conf.d/99-kubelet.conf")
    with pytest.raises(ValueError, match="unknown unit"):
        logind_delay("/etc/systemd/logind.conf:InhibitDelayMaxSec=3 fortnights\n")
    with pytest.raises(ValueError, match="not a time span"):
        logind_delay("/etc/systemd/logind.conf:InhibitDelayMaxSec=soon\n")
    assert logind_delay("/etc/systemd/logind.conf:InhibitDelayMaxSec=infinity\n")[0] == float("inf")


@pytest.mark.parametrize(
    ("byte", "policy"), [(0x01, "always-off"), (0x21, "previous"), (0x41, "always-on"), (0x60, "unknown")]
)
def test_the_restore_policy_is_bits_6_and_5_of_the_chassis_status(byte: int, policy: str) -> None:
    # ipmi_sim answers 01 00 00 (power on, always-off): the lab test reads that one from the real peer.
    assert restore_policy_of(bytes([byte, 0, 0])) == policy


def test_a_report_counts_and_summarises_in_node_then_check_order() -> None:
    findings = [
        Finding(1, "a", "ssh", Verdict.PASS, "ok"),
        Finding(1, "a", "wol", Verdict.FAIL, "Wake-on: d"),
        Finding(2, "b", "ssh", Verdict.WARN, "x"),
        Finding(2, "b", "sudo", Verdict.NOT_APPLICABLE, "root"),
    ]
    report = CheckReport(findings)
    assert report.counts() == {"pass": 1, "warn": 1, "fail": 1, "n/a": 1}
    assert report.summary() == "2 node(s): 1 pass, 1 warn, 1 fail, 1 n/a; fail: a wol"
    assert report.failures() == ["a wol: Wake-on: d"]
    assert report.as_dict()["nodes"][1] == {
        "node_id": 2,
        "hostname": "b",
        "checks": {"ssh": {"verdict": "warn", "reason": "x"}, "sudo": {"verdict": "n/a", "reason": "root"}},
    }
    assert report.status.value == "failed" and CheckReport(findings[2:]).status.value == "partial"


# ---------------------------------------------------------------- sudo, against sudo 1.9's answers


@dataclass
class ScriptedSudo:
    """A node's `sudo -n -l CMD` as sudo 1.9 answers it (plugins/sudoers: exit 0 and the full path when
    allowed, exit 1 and nothing when not; "a password is required" without NOPASSWD)."""

    allowed: tuple[str, ...] = ()
    password: bool = False
    missing: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)

    async def run(self, argv: list[str], **_: Any) -> CommandResult:
        self.calls.append(tuple(argv))
        assert argv[:3] == ["sudo", "-n", "-l"], argv
        if self.missing:
            return CommandResult(tuple(argv), 127, "", "bash: line 1: sudo: command not found\n", 0)
        if self.password:
            return CommandResult(tuple(argv), 1, "", "sudo: a password is required\n", 0)
        if argv[3] in self.allowed:
            return CommandResult(tuple(argv), 0, f"/usr/bin/{' '.join(argv[3:])}\n", "", 0)
        return CommandResult(tuple(argv), 1, "", "", 0)


def _target(user: str = "mko", role: NodeRole = NodeRole.WORKER) -> CheckTarget:
    node = Node(id=3, hostname="w1", ip_address="10.0.0.3", ssh_user=user, ssh_port=22, role=role)
    node.wol_method = "ethernet"
    power = NodeSnapshot(3, "w1", "10.0.0.3", role, "ethernet", 22)
    return CheckTarget(node, power)


def _sudo(ssh: ScriptedSudo, target: CheckTarget, interface: str | None = "eth0") -> Finding:
    return asyncio.run(_check_sudo(ssh, target, interface, 5))  # type: ignore[arg-type]


def test_sudo_passes_when_every_command_mko_runs_is_allowed() -> None:
    everything = ("microk8s", "snap", "systemctl", "shutdown", "cat", "grep", "ethtool", "mktemp", "rm")
    ssh = ScriptedSudo(allowed=everything)
    finding = _sudo(ssh, _target(role=NodeRole.CONTROL_PLANE))
    assert finding.verdict == Verdict.PASS
    assert finding.reason == "`sudo -n` allows all 17 command(s) mko runs as root"
    assert ("sudo", "-n", "-l", "ethtool", "-s", "eth0", "wol", "g") in ssh.calls
    assert (
        "sudo",
        "-n",
        "-l",
        "microk8s",
        "dbctl",
        "backup",
        "-o",
        "/tmp/mko-dqlite.preflight/backup",
    ) in ssh.calls


def test_sudo_names_the_refused_commands_and_the_sudoers_line_that_fixes_them() -> None:
    finding = _sudo(ScriptedSudo(allowed=("microk8s", "snap", "systemctl", "cat", "grep")), _target())
    assert finding.verdict == Verdict.FAIL
    assert finding.reason.startswith(
        "sudo refuses 3 of 12 command(s) mko runs as root"
        " (shutdown -h now; ethtool eth0; ethtool -s eth0 wol g)"
    )
    assert finding.reason.endswith(
        "add `mko ALL=(root) NOPASSWD: /snap/bin/microk8s, /usr/bin/cat, /usr/bin/grep, /usr/bin/snap,"
        " /usr/bin/systemctl, /usr/sbin/ethtool, /usr/sbin/shutdown` to /etc/sudoers.d/mko (visudo -f)"
    )


def test_sudo_that_wants_a_password_or_is_missing_fails_at_once_and_root_needs_none() -> None:
    asking = ScriptedSudo(password=True)
    finding = _sudo(asking, _target())
    assert finding.verdict == Verdict.FAIL and len(asking.calls) == 1
    assert finding.reason.startswith("sudo asks mko for a password (mko runs `sudo -n`): add a NOPASSWD rule")
    missing = _sudo(ScriptedSudo(missing=True), _target())
    assert (missing.verdict, missing.reason) == (
        Verdict.FAIL,
        "sudo is not installed on w1: apt-get install sudo",
    )
    root = ScriptedSudo()
    assert _sudo(root, _target(user="root")).verdict == Verdict.NOT_APPLICABLE and not root.calls
    assert len(sudo_commands(_target().node, None)) == 10


# ---------------------------------------------------------------- adapters


def _wait_finished(client: TestClient, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        body: dict[str, Any] = client.get(url).json()
        if body["finished_at"] is not None or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_a_check_over_the_api_is_stored_and_shown_on_the_cluster_page(client: TestClient, web: Any) -> None:
    client.post("/api/clusters", json={"name": "home"})
    node = {"hostname": "cp1", "ip_address": "127.0.0.1", "cluster_id": 1, "role": "control-plane"}
    assert client.post("/api/nodes", json=node | {"ssh_port": 9}).status_code == 201  # nothing listens
    assert client.get("/api/clusters/1/check").status_code == 404
    assert "Not checked yet." in web.get("/clusters/1").text
    started = client.post("/api/clusters/1/check")
    assert started.status_code == 202, started.text
    assert started.headers["Location"] == started.json()["operation_url"]
    operation = _wait_finished(client, started.json()["operation_url"])
    assert operation["status"] == "failed" and operation["kind"] == "cluster_check"
    latest = client.get("/api/clusters/1/check").json()
    assert latest["operation_id"] == started.json()["operation_id"]
    [entry] = latest["nodes"]
    assert entry["checks"]["ssh"]["verdict"] == "fail"
    assert (
        "is it on and is sshd listening on port 9? (`mko wol wake-node 1`)"
        in entry["checks"]["ssh"]["reason"]
    )
    assert entry["checks"]["wol"] == {"verdict": "n/a", "reason": "not checked: no SSH session"}
    page = web.get("/clusters/1").text
    assert 'id="preflight-table"' in page and "is it on and is sshd listening on port 9?" in page
    assert client.post("/api/clusters/9/check").status_code == 404
    assert web.form("/clusters/1/check", follow_redirects=False).status_code == 303


def test_the_setting_that_makes_a_scheduled_shutdown_wait_for_the_preflight(
    client: TestClient, web: Any
) -> None:
    client.post("/api/clusters", json={"name": "home"})
    assert client.get("/api/clusters/1/settings").json()["preflight_required"] is False
    changed = client.patch("/api/clusters/1/settings", json={"preflight_required": True})
    assert changed.status_code == 200 and changed.json()["preflight_required"] is True
    assert client.patch("/api/clusters/1/settings", json={"preflight_required": "maybe"}).status_code == 422
    saved = web.form("/clusters/1/settings", data={"backup_keep": "5"}, follow_redirects=False)
    assert (
        saved.status_code == 303
        and client.get("/api/clusters/1/settings").json()["preflight_required"] is False
    )
    web.form("/clusters/1/settings", data={"preflight_required": "on"})
    assert client.get("/api/clusters/1/settings").json()["preflight_required"] is True
    assert 'name="preflight_required" checked' in web.get("/clusters/1").text
