"""Preflight: what would keep mko from bringing a cluster down cleanly and back up by itself.

``mko cluster check ID`` (``POST /api/clusters/ID/check``, the cluster's page) runs five checks on every
node; each ends ``pass``, ``warn``, ``fail`` or ``n/a`` with one line that names the fix::

    ssh                an SSH login, the host key verified against known_hosts as always
    sudo               ``sudo -n -l CMD`` for each command mko runs as root on that node (a non-root login)
    graceful_shutdown  MicroK8s' kubelet args name a ``--config`` whose ``shutdownGracePeriod`` is set,
                       and logind's ``InhibitDelayMaxSec`` is at least as long (else kubelet cannot
                       hold the shutdown: kubernetes #102818)
    wol                the NIC is armed for magic packets (ethtool's ``Wake-on`` has ``g``), for nodes
                       woken by Wake-on-LAN
    restore_policy     the BIOS "power on after AC loss" policy, over IPMI (Get Chassis Status) or
                       Redfish (``ComputerSystem.PowerRestorePolicy``), for nodes with a BMC

Nodes are checked at once (``ssh_parallel`` at a time), each within ``preflight_timeout`` seconds; the
checks of one node share one SSH connection. A check that could not run because SSH failed is ``n/a``
with the reason "not checked". The result is an operation (kind ``cluster_check``) with one step per node
and check (``detail.verdict``). A shutdown for power (a rule's) or on a schedule runs the same checks
beside its first steps and records their findings as its ``preflight`` step, waiting for them at most
``preflight_shutdown_wait`` seconds; only a scheduled shutdown of a cluster with ``preflight_required``
refuses to start when a check fails (see docs/shutdown.md).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mko.cluster.steps import StepHook, _StepLog
from mko.inventory.clusters import get_cluster
from mko.inventory.nodes import list_nodes
from mko.inventory.snapshots import snapshots
from mko.nic.ethtool import parse_ethtool
from mko.nic.interfaces import choose_interface, read_interfaces
from mko.operations.kinds import CHECK_KIND
from mko.operations.records import Actor, finish_operation, start_operation
from mko.platform.db.models.inventory import Node, NodeRole
from mko.platform.db.models.operations import Operation, OperationStatus
from mko.platform.errors import (
    HostKeyChangedError,
    HostKeyUnknownError,
    MkoError,
    PowerError,
    SshAuthError,
    SshUnreachableError,
)
from mko.platform.settings import Settings
from mko.power.base import AttemptError, Capability, NodeSnapshot
from mko.power.registry import DRIVERS
from mko.ssh.client import SshSession, SshTarget, connect

__all__ = [
    "CHECKS",
    "CheckReport",
    "CheckTarget",
    "Finding",
    "PreparedCheck",
    "Verdict",
    "check_nodes",
    "latest_check",
    "run_check",
    "start_check",
]

log = logging.getLogger("mko.preflight")

CHECKS = ("ssh", "sudo", "graceful_shutdown", "wol", "restore_policy")
_NEED_SSH = ("sudo", "graceful_shutdown", "wol")

KUBELET_ARGS = "/var/snap/microk8s/current/args/kubelet"
_SNAP_VARS = {
    "SNAP_DATA": "/var/snap/microk8s/current",
    "SNAP_COMMON": "/var/snap/microk8s/common",
    "SNAP": "/snap/microk8s/current",
}
# logind reads its main file, then drop-ins sorted by file name across these directories (an /etc one
# hides a same-named one under /run or /usr/lib); systemd's default InhibitDelayMaxSec is 5 s.
_LOGIND_MAIN = "/etc/systemd/logind.conf"
_LOGIND_DROPINS = (
    "/etc/systemd/logind.conf.d",
    "/run/systemd/logind.conf.d",
    "/usr/lib/systemd/logind.conf.d",
)
_LOGIND_DEFAULT = 5.0
_LOGIND_GREP = ["grep", "-rsH", "InhibitDelayMaxSec", _LOGIND_MAIN, *_LOGIND_DROPINS]
_COMMAND_NOT_FOUND = 127
# Power methods by name (mko.power.registry): the two BMC protocols.
_IPMI, _REDFISH = "ipmi", "redfish"
# Where the commands usually live, for the sudoers line a failing sudo check suggests.
_USUAL_PATHS = {
    "microk8s": "/snap/bin/microk8s",
    "snap": "/usr/bin/snap",
    "systemctl": "/usr/bin/systemctl",
    "shutdown": "/usr/sbin/shutdown",
    "ethtool": "/usr/sbin/ethtool",
    "mktemp": "/usr/bin/mktemp",
    "cat": "/usr/bin/cat",
    "rm": "/usr/bin/rm",
    "grep": "/usr/bin/grep",
}


class Verdict(enum.StrEnum):
    """How one check ended."""

    PASS = "pass"  # noqa: S105  (a verdict, not a password)
    WARN = "warn"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"


_STEP_STATUS = {
    Verdict.PASS: OperationStatus.SUCCEEDED,
    Verdict.WARN: OperationStatus.PARTIAL,
    Verdict.FAIL: OperationStatus.FAILED,
    Verdict.NOT_APPLICABLE: OperationStatus.CANCELLED,
}


@dataclass(frozen=True)
class Finding:
    """One check of one node: its verdict and the one line saying why (and what fixes it)."""

    node_id: int
    hostname: str
    check: str
    verdict: Verdict
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, without the command records."""
        return {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "check": self.check,
            "verdict": self.verdict.value,
            "reason": self.reason,
        }


@dataclass
class CheckReport:
    """Every finding of one preflight, in node order then check order."""

    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many checks ended each way."""
        return {v.value: sum(1 for f in self.findings if f.verdict == v) for v in Verdict}

    def of(self, verdict: Verdict) -> list[Finding]:
        """The findings with this verdict."""
        return [f for f in self.findings if f.verdict == verdict]

    @property
    def status(self) -> OperationStatus:
        """failed when a check failed, partial when one warned, succeeded otherwise."""
        if self.of(Verdict.FAIL):
            return OperationStatus.FAILED
        return OperationStatus.PARTIAL if self.of(Verdict.WARN) else OperationStatus.SUCCEEDED

    def failures(self) -> list[str]:
        """``lab-n2 ssh: why`` of each failed check."""
        return [f"{f.hostname} {f.check}: {f.reason}" for f in self.of(Verdict.FAIL)]

    def summary(self) -> str:
        """``3 node(s): 12 pass, 1 warn, 1 fail, 1 n/a; fail: lab-n2 ssh``."""
        nodes = len({f.node_id for f in self.findings})
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items())
        text = f"{nodes} node(s): {counts}"
        failed = self.of(Verdict.FAIL)
        if failed:
            text += "; fail: " + ", ".join(f"{f.hostname} {f.check}" for f in failed)
        return text

    def as_dict(self) -> dict[str, Any]:
        """The operation's result: counts, and per node each check's verdict and reason."""
        nodes: dict[str, dict[str, Any]] = {}
        for finding in self.findings:
            entry = nodes.setdefault(
                finding.hostname, {"node_id": finding.node_id, "hostname": finding.hostname, "checks": {}}
            )
            entry["checks"][finding.check] = {"verdict": finding.verdict.value, "reason": finding.reason}
        return {"counts": self.counts(), "nodes": list(nodes.values())}


@dataclass(frozen=True)
class CheckTarget:
    """A node to check: its row (detached, for SSH) and its power snapshot (for the BMC)."""

    node: Node
    power: NodeSnapshot


FindingHook = Callable[[Finding], Any]


# ------------------------------------------------------------------ parsing (pure)


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(value: Any) -> float:
    """Seconds of a Go duration as kubelet reads it (``30s``, ``1m30s``, ``0``); ValueError otherwise."""
    text = str(value).strip()
    if text in ("0", ""):
        return 0.0
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 1m30s)")
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def kubelet_flags(text: str) -> dict[str, str]:
    """The flags of MicroK8s' ``args/kubelet`` (one per line, ``--flag=value`` or ``--flag value``;
    ``#`` comments); the last one of a name wins, as with kubelet's own flag parsing."""
    flags: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line.startswith("--"):
            continue
        words = shlex.split(line, comments=True)
        if not words:
            continue
        name, equals, value = words[0].partition("=")
        flags[name] = value if equals else (words[1] if len(words) > 1 else "true")
    return flags


def expand_snap(path: str) -> str:
    """``${SNAP_DATA}/args/x.yaml`` → ``/var/snap/microk8s/current/args/x.yaml`` (as the snap's wrapper)."""
    for name, value in _SNAP_VARS.items():
        path = path.replace("${" + name + "}", value).replace("$" + name, value)
    return path


def logind_delay(grep_output: str) -> tuple[float, str]:
    """logind's effective ``InhibitDelayMaxSec`` from ``grep -H`` lines, and the file that set it."""
    settings: list[tuple[int, str, str, str]] = []  # (main first, drop-in name, directory rank, value)
    for line in grep_output.splitlines():
        path, _, setting = line.partition(":")
        key, _, value = setting.partition("=")
        if key.strip() != "InhibitDelayMaxSec":
            continue
        directory, _, name = path.rpartition("/")
        if path == _LOGIND_MAIN:
            settings.append((0, "", "", path + "=" + value.strip()))
        elif directory in _LOGIND_DROPINS and name.endswith(".conf"):
            settings.append((1, name, str(_LOGIND_DROPINS.index(directory)), path + "=" + value.strip()))
    chosen: dict[tuple[int, str], tuple[str, str]] = {}
    for main, name, rank, entry in sorted(settings):
        # Within one drop-in name, /etc hides /run hides /usr/lib (the lowest rank wins); across names the
        # later name wins, and within one file the last line.
        if (main, name) not in chosen or rank <= chosen[(main, name)][0]:
            chosen[(main, name)] = (rank, entry)
    if not chosen:
        return _LOGIND_DEFAULT, "systemd's default"
    path, _, value = chosen[max(chosen)][1].rpartition("=")
    return _systemd_seconds(value), path


_SYSTEMD_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _systemd_seconds(value: str) -> float:
    """``30``, ``30s``, ``1min 30s``, ``90sec``, ``infinity`` (systemd.time); ValueError otherwise."""
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if text == "infinity":
        return math.inf
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text)
    if not parts:
        raise ValueError(f"InhibitDelayMaxSec={text} is not a time span")
    total = 0.0
    for number, unit in parts:
        if unit not in _SYSTEMD_UNITS:
            raise ValueError(f"InhibitDelayMaxSec={text}: unknown unit {unit!r}")
        total += float(number) * _SYSTEMD_UNITS[unit]
    return total


def _seconds(value: float) -> str:
    return f"{value:g} s"


# ------------------------------------------------------------------ the checks of one node


def _finding(target: CheckTarget, check: str, verdict: Verdict, reason: str, **detail: Any) -> Finding:
    return Finding(target.node.id, target.node.hostname, check, verdict, reason, detail)


def _ssh_failure(target: CheckTarget, exc: PowerError) -> Finding:
    node = target.node
    if isinstance(exc, HostKeyUnknownError | HostKeyChangedError):
        reason = str(exc)  # names `mko node trust ID` (--replace)
    elif isinstance(exc, SshAuthError):
        reason = (
            f"{exc}: add mko's public key to ~{node.ssh_user}/.ssh/authorized_keys on the node"
            f" (or set its key with `mko node update {node.id} --ssh-key PATH`)"
        )
    elif isinstance(exc, SshUnreachableError):
        reason = (
            f"{exc}: is it on and is sshd listening on port {node.ssh_port}? (`mko wol wake-node {node.id}`)"
        )
    else:
        reason = str(exc)
    return _finding(target, "ssh", Verdict.FAIL, reason)


def sudo_commands(node: Node, interface: str | None) -> list[list[str]]:
    """The command lines mko runs with sudo on this node (as it runs them, with representative values)."""
    commands = [
        ["microk8s", "status"],
        ["microk8s", "stop"],
        ["microk8s", "start"],
        ["snap", "stop", "microk8s", "--disable"],
        ["snap", "start", "microk8s", "--enable"],
        ["systemctl", "poweroff"],
        ["shutdown", "-h", "now"],
        ["systemctl", "show", "snap.microk8s.daemon-kubelite.service", "-p", "NRestarts,ActiveState"],
        ["cat", "--", KUBELET_ARGS],
        _LOGIND_GREP,
    ]
    if node.role == NodeRole.CONTROL_PLANE:
        commands += [
            ["microk8s", "kubectl", "get", "nodes", "-o", "json"],
            ["microk8s", "kubectl", "drain", node.hostname.lower(), "--ignore-daemonsets"],
            ["microk8s", "dbctl", "backup", "-o", "/tmp/mko-dqlite.preflight/backup"],  # noqa: S108
            ["mktemp", "-d", "/tmp/mko-dqlite.XXXXXXXX"],  # noqa: S108
            ["rm", "-rf", "--", "/tmp/mko-dqlite.preflight"],  # noqa: S108
        ]
    if interface is not None:
        commands += [["ethtool", interface], ["ethtool", "-s", interface, "wol", "g"]]
    return commands


async def _check_sudo(ssh: SshSession, target: CheckTarget, interface: str | None, timeout: float) -> Finding:
    node = target.node
    if node.ssh_user == "root":
        return _finding(
            target, "sudo", Verdict.NOT_APPLICABLE, "logs in as root: mko runs its commands without sudo"
        )
    refused: list[str] = []
    for argv in sudo_commands(node, interface):
        # `sudo -l CMD` prints the command's full path and exits 0 when the policy allows it; -n fails at
        # once instead of asking for a password.
        result = await ssh.run(["sudo", "-n", "-l", *argv], timeout=timeout)
        if result.exit_status == _COMMAND_NOT_FOUND:
            return _finding(
                target,
                "sudo",
                Verdict.FAIL,
                f"sudo is not installed on {node.hostname}: apt-get install sudo",
            )
        if "password is required" in result.stderr:
            return _finding(
                target,
                "sudo",
                Verdict.FAIL,
                f"sudo asks {node.ssh_user} for a password (mko runs `sudo -n`): add a NOPASSWD rule,"
                f" e.g. `{_sudoers_line(node.ssh_user, sudo_commands(node, interface))}`"
                " in /etc/sudoers.d/mko",
                **result.as_dict(),
            )
        if not result.ok:
            refused.append(shlex.join(argv))
    commands = sudo_commands(node, interface)
    if refused:
        return _finding(
            target,
            "sudo",
            Verdict.FAIL,
            f"sudo refuses {len(refused)} of {len(commands)} command(s) mko runs as root"
            f" ({'; '.join(refused[:4])}{' …' if len(refused) > 4 else ''}): add"
            f" `{_sudoers_line(node.ssh_user, commands)}` to /etc/sudoers.d/mko (visudo -f)",
            refused=refused,
        )
    return _finding(
        target, "sudo", Verdict.PASS, f"`sudo -n` allows all {len(commands)} command(s) mko runs as root"
    )


def _sudoers_line(user: str, commands: Sequence[Sequence[str]]) -> str:
    paths = sorted({_USUAL_PATHS.get(argv[0], argv[0]) for argv in commands})
    return f"{user} ALL=(root) NOPASSWD: {', '.join(paths)}"


_RESTART_KUBELITE = "`sudo snap restart microk8s.daemon-kubelite`"


async def _check_graceful(  # noqa: PLR0911  (one return per finding)
    ssh: SshSession, target: CheckTarget, timeout: float
) -> Finding:
    check = "graceful_shutdown"
    args = await ssh.run(["cat", "--", KUBELET_ARGS], sudo=True, timeout=timeout)
    if not args.ok:
        why = (args.stderr.strip().splitlines() or [f"exit {args.exit_status}"])[-1]
        fix = "see the sudo check" if why.startswith("sudo:") else "is MicroK8s installed?"
        return _finding(
            target, check, Verdict.FAIL, f"cannot read {KUBELET_ARGS} ({why}): {fix}", **args.as_dict()
        )
    flags = kubelet_flags(args.stdout)
    gates = flags.get("--feature-gates", "")
    if re.search(r"(^|,)\s*GracefulNodeShutdown\s*=\s*false", gates):
        return _finding(
            target,
            check,
            Verdict.FAIL,
            f"--feature-gates in {KUBELET_ARGS} turns GracefulNodeShutdown off: remove it,"
            f" then {_RESTART_KUBELITE}",
        )
    config = flags.get("--config")
    example = "shutdownGracePeriod: 30s and shutdownGracePeriodCriticalPods: 10s"
    if not config:
        return _finding(
            target,
            check,
            Verdict.FAIL,
            f"graceful node shutdown is off: {KUBELET_ARGS} names no --config (MicroK8s' default); add"
            f" --config=${{SNAP_DATA}}/args/kubelet-config.yaml holding {example}, then {_RESTART_KUBELITE}",
        )
    path = expand_snap(config)
    read = await ssh.run(["cat", "--", path], sudo=True, timeout=timeout)
    if not read.ok:
        return _finding(
            target,
            check,
            Verdict.FAIL,
            f"kubelet's --config {path} cannot be read: create it with {example}, then {_RESTART_KUBELITE}",
            **read.as_dict(),
        )
    try:
        period, critical = _grace_periods(read.stdout)
    except ValueError as exc:
        return _finding(target, check, Verdict.FAIL, f"{path}: {exc}: fix it, then {_RESTART_KUBELITE}")
    if period <= 0:
        return _finding(
            target,
            check,
            Verdict.FAIL,
            f"graceful node shutdown is off: {path} sets no shutdownGracePeriod (0s); set {example},"
            f" then {_RESTART_KUBELITE}",
        )
    if critical > period:
        return _finding(
            target,
            check,
            Verdict.FAIL,
            f"shutdownGracePeriodCriticalPods ({_seconds(critical)}) is longer than shutdownGracePeriod"
            f" ({_seconds(period)}) in {path}: kubelet refuses the configuration; make it shorter",
        )
    grep = await ssh.run(_LOGIND_GREP, sudo=True, timeout=timeout)
    try:
        delay, source = logind_delay(grep.stdout)
    except ValueError as exc:
        return _finding(target, check, Verdict.FAIL, f"logind: {exc}")
    if delay < period:
        return _finding(
            target,
            check,
            Verdict.FAIL,
            f"logind's InhibitDelayMaxSec is {_seconds(delay)} ({source}), shorter than shutdownGracePeriod"
            f" {_seconds(period)}: kubelet cannot hold the shutdown (kubernetes #102818); set"
            f" InhibitDelayMaxSec={math.ceil(period)} in /etc/systemd/logind.conf.d/99-kubelet.conf and"
            " `sudo systemctl restart systemd-logind`, then " + _RESTART_KUBELITE,
        )
    if critical == period:
        return _finding(
            target,
            check,
            Verdict.WARN,
            f"shutdownGracePeriodCriticalPods equals shutdownGracePeriod ({_seconds(period)}) in {path}:"
            " regular pods get no time to stop; make the critical share shorter",
        )
    return _finding(
        target,
        check,
        Verdict.PASS,
        f"shutdownGracePeriod {_seconds(period)} ({_seconds(critical)} for critical pods) in {path};"
        f" logind InhibitDelayMaxSec {_seconds(delay)}",
    )


def _grace_periods(text: str) -> tuple[float, float]:
    """(shutdownGracePeriod, shutdownGracePeriodCriticalPods) of a KubeletConfiguration, in seconds."""
    import yaml

    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(config, dict):
        raise ValueError("not a KubeletConfiguration")
    period = go_duration(config.get("shutdownGracePeriod", "0s"))
    critical = go_duration(config.get("shutdownGracePeriodCriticalPods", "0s"))
    by_priority = config.get("shutdownGracePeriodByPodPriority") or []
    if isinstance(by_priority, list) and by_priority:
        # Priority-based graceful shutdown replaces the two durations: the longest class bounds it.
        seconds = [float(p.get("shutdownGracePeriodSeconds", 0)) for p in by_priority if isinstance(p, dict)]
        period, critical = max(seconds, default=0.0), 0.0
    return period, critical


def _wakes_by_magic(node: Node) -> bool:
    return str(node.wol_method) in DRIVERS.with_capability(Capability.WAKE_ONLY)


async def _interface(ssh: SshSession, node: Node) -> str:
    """The node's card for Wake-on: the one recorded, else the one with its MAC, else collect-mac's pick."""
    if node.nic_interface:
        return node.nic_interface
    interfaces = await read_interfaces(ssh)
    for interface in interfaces:
        if node.wol_mac_address is not None and interface.mac == node.wol_mac_address:
            return interface.name
    return choose_interface(interfaces, node.ip_address).interface.name


async def _check_wol(ssh: SshSession, target: CheckTarget, interface: str, timeout: float) -> Finding:
    node = target.node
    result = await ssh.run(["ethtool", interface], sudo=True, timeout=timeout)
    if not result.ok:
        why = (result.stderr.strip().splitlines() or [f"exit {result.exit_status}"])[-1]
        fix = ": see the sudo check" if why.startswith("sudo:") else ""
        return _finding(
            target, "wol", Verdict.FAIL, f"`ethtool {interface}` failed: {why}{fix}", **result.as_dict()
        )
    wol = parse_ethtool(result.stdout)
    if wol.supports is None:
        return _finding(
            target,
            "wol",
            Verdict.FAIL,
            f"ethtool reports no Wake-on for {interface} (its driver cannot wake the machine): enable"
            " Wake-on-LAN in the BIOS, or power it another way"
            f" (`mko wol configure {node.id} --method ipmi …`)",
        )
    if not wol.magic_capable:
        return _finding(
            target,
            "wol",
            Verdict.FAIL,
            f"{interface} supports Wake-on {wol.supports}, not magic packets (g): enable Wake-on-LAN in the"
            f" BIOS, or power it another way (`mko wol configure {node.id} --method ipmi …`)",
        )
    if not wol.magic_armed:
        return _finding(
            target,
            "wol",
            Verdict.FAIL,
            f"Wake-on: {wol.wake_on} on {interface}: a magic packet would not wake it; run"
            f" `mko wol enable {node.id}` (ethtool -s {interface} wol g, made persistent)",
        )
    if not node.wol_enabled:
        return _finding(
            target,
            "wol",
            Verdict.WARN,
            f"Wake-on: {wol.wake_on} on {interface}, but mko's WoL flag is off, so a cluster wake skips"
            f" it: `mko wol enable {node.id}`",
        )
    kept = f", kept across reboots by {node.nic_wol_persistence}" if node.nic_wol_persistence else ""
    return _finding(target, "wol", Verdict.PASS, f"Wake-on: {wol.wake_on} on {interface}{kept}")


@runtime_checkable
class _ReadsRestorePolicy(Protocol):
    async def restore_policy(self, node: NodeSnapshot) -> str | None: ...


_GOOD_POLICIES = {"always-on", "AlwaysOn"}
_POLICY_WORDS = {
    "previous": "it powers on only if it was on when mains failed, and mko had powered it off",
    "LastState": "it powers on only if it was on when mains failed, and mko had powered it off",
    "always-off": "it stays off when mains returns",
    "AlwaysOff": "it stays off when mains returns",
    "unknown": "the BMC reports the policy as unknown",
}


async def _check_restore_policy(  # noqa: PLR0911  (one return per finding)
    target: CheckTarget, settings: Settings, timeout: float
) -> Finding:
    check = "restore_policy"
    power = target.power
    method = str(power.method)
    if method not in (_IPMI, _REDFISH):
        return _finding(
            target,
            check,
            Verdict.NOT_APPLICABLE,
            f'no BMC (powered by {method}): check "restore on AC power loss" in its BIOS setup',
        )
    driver = DRIVERS.lookup(settings)(power)
    if isinstance(driver, AttemptError) or not isinstance(driver, _ReadsRestorePolicy):
        return _finding(target, check, Verdict.FAIL, f"the {method} driver is unavailable: {driver}")
    fix = f"`mko wol configure {power.node_id}` with the BMC's address and credentials"
    try:
        async with asyncio.timeout(timeout):
            policy = await driver.restore_policy(power)
    except TimeoutError:
        return _finding(
            target, check, Verdict.FAIL, f"the BMC did not answer within {timeout:g} s: check {fix}"
        )
    except MkoError as exc:
        return _finding(target, check, Verdict.FAIL, f"{exc}: check {fix}")
    except Exception as exc:  # e.g. a BMC answering something that is not JSON
        log.exception("preflight: restore policy of %s", power.label)
        return _finding(
            target, check, Verdict.FAIL, f"the BMC's answer was not understood ({exc}): check {fix}"
        )
    finally:
        close = getattr(driver, "aclose", None)
        if close is not None:
            await close()
    if method == _IPMI:
        change = "`ipmitool -I lanplus -H BMC -U USER -P … chassis policy always-on`"
    else:
        change = "PATCH PowerRestorePolicy=AlwaysOn on the ComputerSystem, or the BIOS setup"
    if policy is None:
        return _finding(
            target,
            check,
            Verdict.WARN,
            'the Redfish service does not expose ComputerSystem.PowerRestorePolicy: check "restore on AC'
            " power loss\" in the BIOS setup (or the vendor's attribute under the system's Bios resource)",
        )
    if policy in _GOOD_POLICIES:
        return _finding(
            target, check, Verdict.PASS, f"{policy}: it powers on by itself when mains returns", policy=policy
        )
    words = _POLICY_WORDS.get(policy, f"policy {policy!r}")
    return _finding(
        target,
        check,
        Verdict.WARN,
        f"{policy}: {words}; only mko's {method} power-on brings it back. To start without mko: {change}",
        policy=policy,
    )


async def _ssh_checks(target: CheckTarget, settings: Settings, found: FindingHook) -> None:
    """The checks that need the node itself, in one SSH connection."""
    node, timeout = target.node, settings.ssh_command_timeout
    async with connect(SshTarget.of(node, settings), settings) as ssh:
        where = f"{node.ssh_user}@{node.ip_address}:{node.ssh_port}"
        await found(_finding(target, "ssh", Verdict.PASS, f"{where}, host key verified"))
        interface = await _interface(ssh, node) if _wakes_by_magic(node) else None
        await found(await _check_sudo(ssh, target, interface, timeout))
        await found(await _check_graceful(ssh, target, timeout))
        if interface is None:
            why = f"woken by its {node.wol_method} driver, not by a magic packet"
            await found(_finding(target, "wol", Verdict.NOT_APPLICABLE, why))
        else:
            await found(await _check_wol(ssh, target, interface, timeout))


async def _check_node(target: CheckTarget, settings: Settings, report: FindingHook) -> None:
    """All checks of one node, the BMC's beside the SSH ones; each reported as it ends."""
    bmc = asyncio.ensure_future(_check_restore_policy(target, settings, settings.preflight_timeout))
    pending = ["ssh", *_NEED_SSH]

    async def found(finding: Finding) -> None:
        pending.remove(finding.check)
        await report(finding)

    async def give_up(why: str, no_session: Finding | None = None) -> None:
        if "ssh" in pending:  # no session: the other checks could not run at all
            await found(no_session or _finding(target, "ssh", Verdict.FAIL, why))
            for check in list(pending):
                await found(_finding(target, check, Verdict.NOT_APPLICABLE, "not checked: no SSH session"))
        for check in list(pending):
            await found(_finding(target, check, Verdict.FAIL, why))

    try:
        async with asyncio.timeout(settings.preflight_timeout):
            await _ssh_checks(target, settings, found)
    except asyncio.CancelledError:
        bmc.cancel()  # a shutdown that waited long enough: nothing of this node's checks goes on
        raise
    except TimeoutError:
        await give_up(f"did not finish within {settings.preflight_timeout:g} s (MKO_PREFLIGHT_TIMEOUT)")
    except PowerError as exc:
        await give_up(str(exc), _ssh_failure(target, exc))
    except Exception as exc:  # a bug in one check must not lose the node's other findings
        log.exception("preflight of %s crashed", target.node.hostname)
        await give_up(f"check crashed: {type(exc).__name__}: {exc}")
    await report(await bmc)


async def check_nodes(
    targets: Sequence[CheckTarget], settings: Settings, on_finding: FindingHook | None = None
) -> CheckReport:
    """Run every check on every node (``ssh_parallel`` nodes at a time); findings in node, check order."""
    gate = asyncio.Semaphore(settings.ssh_parallel)
    found: list[Finding] = []

    async def report(finding: Finding) -> None:
        found.append(finding)
        if on_finding is not None:
            await on_finding(finding)

    async def one(target: CheckTarget) -> None:
        async with gate:
            await _check_node(target, settings, report)

    await asyncio.gather(*(one(t) for t in targets))
    order = {t.node.id: i for i, t in enumerate(targets)}
    found.sort(key=lambda f: (order[f.node_id], CHECKS.index(f.check)))
    return CheckReport(found)


# ------------------------------------------------------------------ as an operation


@dataclass
class PreparedCheck:
    """A recorded, running preflight and the nodes it checks."""

    operation_id: int
    cluster_id: int
    targets: list[CheckTarget]


def check_targets(session: Session, cluster_id: int) -> list[CheckTarget]:
    """The cluster's nodes, detached, with their power snapshots (NotFoundError: no such cluster)."""
    get_cluster(session, cluster_id)
    nodes = list(list_nodes(session, cluster_id))
    targets = [CheckTarget(node, power) for node, power in zip(nodes, snapshots(session, nodes), strict=True)]
    for node in nodes:
        session.expunge(node)  # read from the check's tasks while this session is gone
    return targets


def start_check(session: Session, cluster_id: int, actor: Actor) -> PreparedCheck:
    """Record a running ``cluster_check`` operation for the cluster's nodes."""
    targets = check_targets(session, cluster_id)
    operation = start_operation(
        session,
        kind=CHECK_KIND,
        target_type="cluster",
        target_id=cluster_id,
        actor=actor,
        parameters={"checks": list(CHECKS), "nodes": [t.node.hostname for t in targets]},
        summary=f"checking {len(targets)} node(s)",
    )
    return PreparedCheck(operation.id, cluster_id, targets)


async def run_check(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedCheck,
    on_step: StepHook | None = None,
) -> Operation:
    """Run the checks, one step per node and check as each ends; close the operation with the report."""
    return (await checked_run(session_factory, settings, prepared, on_step))[0]


async def checked_run(
    session_factory: sessionmaker[Session],
    settings: Settings,
    prepared: PreparedCheck,
    on_step: StepHook | None = None,
) -> tuple[Operation, CheckReport | None]:
    """:func:`run_check`, with the report (None when the run crashed)."""
    steps = _StepLog(session_factory, prepared.operation_id, on_step)

    async def record(finding: Finding) -> None:
        detail = finding.detail | {"verdict": finding.verdict.value, "check": finding.check}
        name = f"{finding.check} {finding.hostname}"
        await steps.record(name, finding.node_id, _STEP_STATUS[finding.verdict], finding.reason, detail)

    def close(status: OperationStatus, summary: str, result: dict[str, Any] | None = None) -> Operation:
        with session_factory() as session:
            operation = session.get_one(Operation, prepared.operation_id)
            return finish_operation(session, operation, status=status, summary=summary, result=result)

    try:
        report = await check_nodes(prepared.targets, settings, record)
    except asyncio.CancelledError:
        close(OperationStatus.CANCELLED, "stopped before every check ended (mko stopped)")
        raise
    except Exception as exc:  # a bug must not leave the operation running forever
        log.exception("preflight of cluster %s crashed", prepared.cluster_id)
        why = f"stopped by an internal error: {type(exc).__name__}: {exc}"
        return close(OperationStatus.FAILED, why), None
    return close(report.status, report.summary(), report.as_dict()), report


def latest_check(session: Session, cluster_id: int) -> Operation | None:
    """The cluster's newest finished ``cluster_check`` operation."""
    get_cluster(session, cluster_id)
    query = (
        select(Operation)
        .where(
            Operation.kind == CHECK_KIND,
            Operation.target_type == "cluster",
            Operation.target_id == cluster_id,
            Operation.finished_at.is_not(None),
        )
        .order_by(Operation.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()
