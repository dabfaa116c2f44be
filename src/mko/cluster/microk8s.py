"""The MicroK8s and kubectl command lines mko runs on the nodes, and their quirks."""

from __future__ import annotations

from mko.platform.db.models.inventory import Node
from mko.ssh.client import CommandResult

__all__ = ["kube_name"]


# NOTE: on a node joined with `microk8s join --worker`, `microk8s stop` and `microk8s start` only print
# this notice and exit 0 (the wrappers check var/lock/clustered.lock); `snap stop|start microk8s` works.
_WORKER_NOTICE = "acting as a node in a cluster"
_COMMAND_NOT_FOUND = 127


def kube_name(node: Node) -> str:
    """Return the node's name in Kubernetes: its host name, lowercased as kubelet registers it."""
    return node.hostname.lower()


def shlex_name(result: CommandResult) -> str:
    """``microk8s start`` or ``snap start microk8s --enable``: the command that did the work."""
    return " ".join(a for a in result.argv if a not in ("sudo", "-n", "--"))
