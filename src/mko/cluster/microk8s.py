"""The MicroK8s and kubectl command lines mko runs on the nodes, and their quirks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from mko.platform.db.models.inventory import Node
from mko.platform.errors import PowerError
from mko.ssh.client import CommandResult, SshSession

__all__ = ["drain_argv", "kube_name", "kubectl_json", "run_once_snapd_is_free"]

log = logging.getLogger("mko.shutdown")


# NOTE: on a node joined with `microk8s join --worker`, `microk8s stop` and `microk8s start` only print
# this notice and exit 0 (the wrappers check var/lock/clustered.lock); `snap stop|start microk8s` works.
_WORKER_NOTICE = "acting as a node in a cluster"
_COMMAND_NOT_FOUND = 127
# snapd runs one change per snap at a time (overlord/snapstate/conflict.go): `microk8s start` while a
# `microk8s stop` still runs (one sent by an mko that lost power mid-shutdown) fails with
# `snap "microk8s" has "service-control" change in progress`; once that change ends, a retry works.
_CHANGE_IN_PROGRESS = "change in progress"


def kube_name(node: Node) -> str:
    """Return the node's name in Kubernetes: its host name, lowercased as kubelet registers it."""
    return node.hostname.lower()


def shlex_name(result: CommandResult) -> str:
    """``microk8s start`` or ``snap start microk8s --enable``: the command that did the work."""
    return " ".join(a for a in result.argv if a not in ("sudo", "-n", "--"))


def busy_with_another_change(result: CommandResult) -> bool:
    """Whether snapd refused the command because another change on the snap still runs."""
    return not result.ok and _CHANGE_IN_PROGRESS in f"{result.stderr}\n{result.stdout}"


async def run_once_snapd_is_free(
    ssh: SshSession,
    argv: Sequence[str],
    *,
    timeout: float,
    deadline: float,
    pause: float,
    refused: list[float] | None = None,
) -> CommandResult:
    """Run ARGV with sudo (each run at most ``timeout`` s); while snapd refuses it because another change
    of the snap still runs, run it again every ``pause`` s until ``deadline`` (``time.monotonic()``),
    after which the refusal is the result. ``refused`` gets the time of each refusal.

    Power flapping leaves such a change behind: a `microk8s stop` (or start) sent by an mko that then
    lost power goes on without it, and once it has ended the command goes through.
    """
    result = await ssh.run(argv, sudo=True, timeout=timeout)
    while busy_with_another_change(result):
        if refused is not None:
            refused.append(time.monotonic())
        await asyncio.sleep(pause)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        result = await ssh.run(argv, sudo=True, timeout=min(timeout, left))
    return result


def drain_argv(name: str, timeout: float, *, disable_eviction: bool = False) -> list[str]:
    """``microk8s kubectl drain NAME …``: evictions (which PodDisruptionBudgets may refuse) unless
    ``disable_eviction`` (pods deleted, budgets bypassed)."""
    argv = ["microk8s", "kubectl", "drain", name, "--ignore-daemonsets", "--delete-emptydir-data"]
    if disable_eviction:
        argv.append("--disable-eviction")
    return [*argv, f"--timeout={int(timeout)}s"]


async def kubectl_json(ssh: SshSession, args: Sequence[str], timeout: float = 60) -> str | None:
    """``microk8s kubectl ARGS -o json``'s output, or None (logged) when kubectl failed."""
    try:
        result = await ssh.run(["microk8s", "kubectl", *args, "-o", "json"], sudo=True, timeout=timeout)
    except PowerError as exc:
        log.warning("%s: kubectl %s: %s", ssh.target.label, " ".join(args), exc)
        return None
    if not result.ok:
        log.warning(
            "%s: `%s` exited %s: %s",
            ssh.target.label,
            result.command,
            result.exit_status,
            (result.stderr.strip().splitlines() or [""])[-1],
        )
        return None
    return result.stdout
